"""vaecodec: a learned image codec (variable-rate mean-scale hyperprior VAE, .vae container).

Quick start::

    import vaecodec
    data = vaecodec.encode(pil_image, quality=75)      # bytes of a .vae file
    pixels = vaecodec.decode(data)                     # numpy H×W×3 uint8
    vaecodec.read_header(data).width                   # no torch needed

``decode`` and ``read_header`` take bytes, a path or a binary file object, as
``PIL.Image.open`` does.

Pipelines keep a :class:`Codec` (model loaded once, on cpu or cuda) and use its
``encode_batch``/``decode_batch``. Every error raised on purpose derives from
:class:`VaecodecError`.

Torch-bound names (``Codec``, ``encode``, ``decode``) are imported lazily (PEP 562), so
``import vaecodec`` and :func:`read_header` never import torch.

``import vaecodec`` also registers the ``.vae`` format with Pillow (:mod:`vaecodec.pillow`):
``Image.open("x.vae")`` reads the header, ``load()`` decodes, ``im.save("x.vae", quality=60)``
encodes. A torch ``Dataset`` over a folder of ``.vae`` files is in :mod:`vaecodec.data`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .container import Header, PixelFormat, is_vae
from .errors import (
    ChecksumError,
    DesyncError,
    FormatError,
    ImageError,
    LimitError,
    ModelMismatchError,
    ReadError,
    TrainingError,
    TruncatedError,
    UnknownModelError,
    UnsupportedVersionError,
    VaecodecError,
    WeightsError,
)
from .pillow import register as _register_pillow_plugin

if TYPE_CHECKING:
    from .api import decode, encode
    from .codec import DEFAULT_QUALITY, QUALITY_RANGE, Codec

__all__ = [
    "DEFAULT_QUALITY", "QUALITY_RANGE", "ChecksumError", "Codec", "DesyncError", "FormatError", "Header",
    "ImageError", "LimitError", "ModelMismatchError", "PixelFormat", "ReadError", "TrainingError",
    "TruncatedError", "UnknownModelError", "UnsupportedVersionError", "VaecodecError", "WeightsError",
    "__version__", "decode", "encode", "is_vae", "read_header",
]

_LAZY = {
    "Codec": "codec", "DEFAULT_QUALITY": "codec", "QUALITY_RANGE": "codec",
    "encode": "api", "decode": "api",
}


def read_header(source: Any) -> Header:
    """The header of a .vae file (model, size, pixel format, quality) without loading a model.

    ``source`` is bytes (or bytearray, memoryview), a path (``str`` or ``os.PathLike``) or a
    binary file object; only the header's bytes are read, and a seekable file object is left
    where it was. A missing file raises :class:`ReadError`, a malformed one :class:`FormatError`,
    both naming the file.
    """
    from .container import read_header as _read

    return _read(source)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    msg = f"module 'vaecodec' has no attribute {name!r}"
    raise AttributeError(msg)


_register_pillow_plugin()
