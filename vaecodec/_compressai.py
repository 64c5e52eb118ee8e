"""The parts of CompressAI that vaecodec uses, imported without CompressAI's package-wide imports.

Why: ``compressai/__init__.py`` (1.2.6 to 1.2.8) imports every subpackage, among them the
point-cloud datasets, models and transforms and ``compressai.registry``, whose ``transforms``
module imports ``torch_geometric`` (and through it ``torch._dynamo``). On a 2-core machine that
is about 3.5 s of a 5-6 s ``import compressai``, for nothing vaecodec uses. The ``__init__.py``
of ``compressai.models`` and of ``compressai.latent_codecs`` do the same (point-cloud models, the
registry). The older releases on PyPI (1.2.6, 1.2.7) have the same ``__init__.py``.

How: before anything of CompressAI is imported, those three packages are put in ``sys.modules``
as the real packages (their own spec, ``__path__`` and ``__file__``) with their ``__init__.py``
run except for the top-level statements that import the package's own submodules
(``from compressai import datasets, ...``, ``from .google import *``). Those statements are
deferred, not dropped: the first time a package is asked for a name it does not have yet
(``compressai.zoo``, ``from compressai.models import ScaleHyperprior``) they run in their
original order until the name exists (a PEP 562 module ``__getattr__``). Everything else of an
``__init__.py`` runs as written (``compressai.get_entropy_coder`` and the rest). vaecodec takes
what it needs from the modules that define it (``compressai.models.base``, not
``compressai.models``); the entropy models and the rANS coder are CompressAI's own.

If CompressAI was imported before this module, nothing is changed. If setting the packages up
fails, the plain import is used (slow but correct). ``tests/test_startup.py`` notices when the
measure stops working: ``import vaecodec.codec`` must leave ``torch_geometric`` out of
``sys.modules``, and a later ``import compressai`` must still offer all of CompressAI.

One more import is put off: ``compressai.entropy_models`` runs ``import scipy.stats`` (half a
second) for one call, ``scipy.stats.norm.ppf`` in ``GaussianConditional.update``, which only
training's export uses. While that module is imported, ``sys.modules["scipy.stats"]`` holds a
placeholder, removed right after; ``scipy.stats`` is then imported the first time it is used,
by SciPy's own module ``__getattr__`` (SciPy loads its submodules on attribute access).

Limitation: code in the same process that reads a CompressAI registry
(``compressai.registry.MODELS``) without touching ``compressai.models`` first sees only what has
been imported so far; ``import compressai.zoo`` or any name taken from ``compressai.models``
fills it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import threading
import types
import warnings

__all__ = [
    "GDN",
    "CompressionModel",
    "EntropyBottleneck",
    "GaussianConditional",
    "RansDecoder",
    "RansEncoder",
    "conv",
    "deconv",
    "get_scale_table",
]

#: The packages whose ``__init__.py`` import far more than their name suggests, parents first.
LAZY_PACKAGES = ("compressai", "compressai.models", "compressai.latent_codecs")


def _imports_own_submodules(node: ast.stmt, package: str) -> bool:
    """Whether a top-level statement of ``package/__init__.py`` imports from the package itself."""
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            return True
        module = node.module or ""
        return node.level == 0 and (module == package or module.startswith(package + "."))
    if isinstance(node, ast.Import):
        return all(alias.name.startswith(package + ".") for alias in node.names)
    return False


def _lazy_package(name: str):
    """Put package ``name`` in ``sys.modules`` with its own-submodule imports deferred."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        raise ImportError(f"{name} is not a package")
    source = spec.loader.get_source(name)
    if source is None:
        raise ImportError(f"no source for {name}")
    tree = ast.parse(source, spec.origin)
    eager = [node for node in tree.body if not _imports_own_submodules(node, name)]
    deferred = [
        compile(ast.Module(body=[node], type_ignores=[]), spec.origin, "exec")
        for node in tree.body
        if _imports_own_submodules(node, name)
    ]
    module = importlib.util.module_from_spec(spec)
    namespace = module.__dict__
    lock = threading.RLock()

    def __getattr__(attr: str):
        # dunder probes (inspect, pickle, pytest) never trigger CompressAI's imports
        if not (attr.startswith("__") and attr.endswith("__")):
            with lock:
                while attr not in namespace and deferred:
                    code = deferred.pop(0)
                    try:
                        exec(code, namespace)  # noqa: S102 (a statement of the package's own __init__.py)
                    except BaseException:
                        deferred.insert(0, code)  # the next access retries and fails alike
                        raise
        try:
            return namespace[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    namespace["__getattr__"] = __getattr__
    namespace["_vaecodec_deferred"] = deferred  # what is still to run, for tests
    sys.modules[name] = module
    try:
        exec(compile(ast.Module(body=eager, type_ignores=[]), spec.origin, "exec"), namespace)  # noqa: S102
    except BaseException:
        del sys.modules[name]
        raise
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _install() -> bool:
    """Set the lazy packages up unless CompressAI is already imported; whether it was done."""
    if any(name in sys.modules for name in LAZY_PACKAGES):
        return False
    installed = []
    try:
        for name in LAZY_PACKAGES:
            _lazy_package(name)
            installed.append(name)
    except Exception:  # noqa: BLE001 (any failure: the plain import below, slow but correct)
        for name in reversed(installed):
            sys.modules.pop(name, None)
        return False
    return True


@contextlib.contextmanager
def _scipy_stats_put_off():
    """While in the block, ``import scipy.stats`` binds ``scipy`` without loading ``scipy.stats``."""
    if "scipy.stats" in sys.modules or "compressai.entropy_models.entropy_models" in sys.modules:
        yield
        return
    import scipy

    if not callable(getattr(scipy, "__getattr__", None)):  # a SciPy without lazy submodules
        yield
        return
    placeholder = types.ModuleType("scipy.stats", "stands in while compressai.entropy_models is imported")
    sys.modules["scipy.stats"] = placeholder
    try:
        yield
    finally:
        if sys.modules.get("scipy.stats") is placeholder:
            del sys.modules["scipy.stats"]
        if scipy.__dict__.get("stats") is placeholder:
            del scipy.stats


#: Whether this process imports CompressAI through the lazy packages above.
LAZY = _install()

with warnings.catch_warnings():  # compressai's modules use the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.ans import RansDecoder, RansEncoder

    with _scipy_stats_put_off():
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models.base import CompressionModel, get_scale_table
    from compressai.models.utils import conv, deconv
