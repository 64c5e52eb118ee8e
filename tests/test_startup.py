"""Start-up: the codec's import path leaves CompressAI's heavy package-wide imports out.

``compressai/__init__.py`` imports its point-cloud code and its registry, hence
``torch_geometric`` and ``torch._dynamo`` (seconds of start-up); :mod:`vaecodec._compressai`
imports only the modules vaecodec uses. These tests notice when that stops working (a new
CompressAI release, an import added elsewhere in vaecodec). The time itself is measured by
``benchmarks/startup.py``, not here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "vaecodec"

#: modules a codec start-up must not import: CompressAI's registry and point-cloud datasets,
#: torch_geometric and what it pulls in, and scipy.stats (used by training's export only)
HEAVY = ("torch_geometric", "torch._dynamo", "compressai.datasets", "compressai.registry",
         "compressai.models.google", "compressai.latent_codecs.channel_groups", "scipy.stats")


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (one thread, the repository first on the path); its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _heavy_after(statement: str) -> list[str]:
    code = (f"{statement}\nimport json, sys\n"
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    return json.loads(_python(code).splitlines()[-1])


def test_codec_import_leaves_out_torch_geometric():
    assert _heavy_after("import vaecodec.codec") == []


def test_shim_imports_only_what_vaecodec_uses():
    assert _heavy_after("import vaecodec._compressai as c\nassert c.LAZY") == []


def test_vaecodec_imports_compressai_only_through_the_shim():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compressai.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "compressai" or n.startswith("compressai.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == [], "import these from vaecodec._compressai instead"


def test_all_of_compressai_still_there_after_the_codec():
    """A later ``import compressai`` in the same process still offers all of CompressAI."""
    out = _python("""
import sys
import vaecodec._compressai as shim
import vaecodec.codec
import compressai
import compressai.entropy_models as em
assert shim.LAZY
assert shim.EntropyBottleneck is em.EntropyBottleneck and shim.GaussianConditional is em.GaussianConditional
assert compressai.get_entropy_coder() == "ans" and "ans" in compressai.available_entropy_coders()
assert compressai.__version__
from compressai.models import ScaleHyperprior, CompressionModel
from compressai.latent_codecs import HyperpriorLatentCodec
assert shim.CompressionModel is CompressionModel
import compressai.zoo
net = compressai.zoo.bmshj2018_hyperprior(quality=1, pretrained=False)
assert isinstance(net, ScaleHyperprior)
assert compressai.datasets.ImageFolder and "bmshj2018-hyperprior" in compressai.registry.MODELS
from compressai import *
assert callable(set_entropy_coder) and zoo is compressai.zoo
# scipy.stats is imported when first used
q = em.GaussianConditional._standardized_quantile(0.025)
assert abs(q + 1.959964) < 1e-5, q
# a name no package has runs what is left of each __init__, then raises AttributeError
for name in shim.LAZY_PACKAGES:
    assert not hasattr(sys.modules[name], "no_such_name")
    assert sys.modules[name]._vaecodec_deferred == [], name
from compressai.models import Cheng2020Attention, MeanScaleHyperprior
print("ok")
""")
    assert out.strip().endswith("ok")


def test_shim_after_a_plain_compressai_import():
    """Imported after CompressAI itself, the shim changes nothing and gives the same classes."""
    out = _python("""
import compressai
import vaecodec._compressai as shim
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
assert not shim.LAZY
assert shim.EntropyBottleneck is EntropyBottleneck and shim.CompressionModel is CompressionModel
print("ok")
""")
    assert out.strip() == "ok"


@pytest.mark.slow
def test_startup_benchmark_prints_json(capsys):
    from benchmarks import startup

    assert startup.main(["--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encode_64x64"]["bytes"] > 0
    assert len(report["encode_64x64"]["seconds"]) == len(report["import_codec"]["seconds"]) == 1
    assert report["encode_64x64"]["target_s"] == startup.TARGET_ENCODE_S
    assert isinstance(report["heavy_modules_imported"], list)
