"""One-call ``encode``/``decode`` over a small cache of loaded :class:`Codec` objects.

The cache (keyed by model id and device) is the package's only hidden state; pipelines that
want control keep their own :class:`Codec`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .codec import DEFAULT_QUALITY, Codec
from .container import naming, read_header, read_source


@lru_cache(maxsize=4)
def _codec(model_id: str | None, device: str, weights: str | None = None, deterministic: bool = False) -> Codec:
    return Codec(model_id, device=device, weights=weights, deterministic=deterministic)


def _weights_key(weights: Any) -> str | None:
    import os

    return None if weights is None else os.path.abspath(os.fspath(weights))


def encode(
    image: Any, /, *, quality: float = DEFAULT_QUALITY, target_bpp: float | None = None,
    model: str | None = None, device: str = "cpu", refine: int = 0, metadata: bool = True,
    weights: Any = None,
) -> bytes:
    """Encode a PIL image, numpy array (H×W[×C]) or torch tensor (C×H×W) to .vae bytes.

    Arrays and tensors are uint8, uint16 (arrays) or float in [0, 1]; float values outside
    [0, 1] (say 0..255 in a float32 array) raise :class:`ImageError` rather than being clipped.

    ``quality`` runs from 0 to 100 (default 75); ``target_bpp`` instead searches the quality
    that lands within 5 % of that many bits per pixel. ``refine`` spends that many gradient
    steps on the latents (slower encoding, smaller files; see :meth:`Codec.encode`).

    ``metadata`` (default True) keeps a PIL image's ICC profile and EXIF block in the file
    (``decode(..., output="pil")`` gives them back in ``info``); False drops both.

    ``weights`` is a ``.safetensors`` file of ``vaecodec train``/``export`` (a fine-tuned model)
    to encode with instead of a shipped model.
    """
    codec = _codec(model, device, _weights_key(weights))
    return codec.encode(image, quality=quality, target_bpp=target_bpp, refine=refine, metadata=metadata)


def decode(
    source: Any, /, *, output: str = "numpy", device: str = "cpu", weights: Any = None, deterministic: bool = False,
) -> Any:
    """Decode a .vae file; ``output`` is "numpy" (default), "pil" or "torch". The model comes from the header.

    ``source`` is bytes (or bytearray, memoryview), a path (``str`` or ``os.PathLike``) or a
    binary file object read from its current position, as ``PIL.Image.open`` accepts. A missing
    file raises :class:`ReadError`; errors about a file named by a path carry its name.

    ``weights`` decodes with a ``.safetensors`` file instead of the shipped model the header
    names (the file's model id must match); ``deterministic`` asks for pixels that do not
    depend on the thread count or device (see :class:`Codec`).
    """
    data = read_source(source)
    with naming(source):
        codec = _codec(read_header(data).model_id if weights is None else None, device, _weights_key(weights),
                       deterministic)
        return codec.decode(data, output=output)
