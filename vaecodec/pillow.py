"""A Pillow plugin for ``.vae`` files, registered by ``import vaecodec``.

After ``import vaecodec``::

    from PIL import Image

    with Image.open("photo.vae") as im:    # reads the header only: im.size, im.mode, im.format == "VAE"
        im.load()                          # decodes (the model loads on first use, on the CPU)
    im.save("copy.vae", quality=60)        # encodes through vaecodec.encode

Opening reads the header with the torch-free :mod:`vaecodec.container`; torch and the model are
imported on the first ``load()`` (or ``save``), so opening files to read their size stays cheap.
``save`` takes ``quality`` (0..100, default 75), ``target_bpp``, ``refine`` and ``model`` as
:func:`vaecodec.encode` does, and ``icc_profile`` as Pillow's formats do (bytes to store, or
``None``/``b""`` to drop the image's profile) and ``exif`` likewise (bytes, with or without the
``Exif\\0\\0`` prefix, or an :class:`PIL.Image.Exif`; ``None``/``b""`` drops the image's EXIF).
After ``load()``, ``im.info["icc_profile"]`` and ``im.info["exif"]`` hold the file's metadata
when it has some; ``im.header`` is the :class:`~vaecodec.Header`.

Errors follow Pillow's conventions for its own formats (measured with Pillow 13.0 on PNG:
bad data before the image data makes ``Image.open`` fail; a truncated body passes ``open``
and raises ``OSError: image file is truncated`` from ``load()``):

* a file that does not start with the ``.vae`` magic is not recognised, and a file with the
  magic but a malformed or truncated header is rejected by ``open`` (as a ``SyntaxError`` from
  the plugin, Pillow's "not this format" signal), so ``Image.open`` raises
  :class:`PIL.UnidentifiedImageError`, as for any unreadable file;
* a newer format version raises :class:`~vaecodec.UnsupportedVersionError` from ``open``;
* everything found while decoding (a truncated body, a CRC mismatch, a model this vaecodec
  does not have, mismatched weights) raises from ``load()``. These errors are both the
  vaecodec error (:class:`~vaecodec.TruncatedError`, :class:`~vaecodec.ChecksumError`, ...,
  all :class:`~vaecodec.VaecodecError`) and an :class:`OSError`, as Pillow's formats raise
  from ``load()``; messages name the file.

``ImageFile.LOAD_TRUNCATED_IMAGES`` is not honoured: a ``.vae`` file decodes whole or not at
all (its CRC covers every byte).
"""

from __future__ import annotations

import functools
from typing import IO, Any

from PIL import Image, ImageFile

from . import container
from .errors import UnsupportedVersionError, VaecodecError

FORMAT = "VAE"
EXTENSION = ".vae"
#: Keywords ``Image.save`` passes on to :func:`vaecodec.encode` (all optional).
SAVE_OPTIONS = ("quality", "target_bpp", "refine", "model")


@functools.cache
def _pillow_error(cls: type[VaecodecError]) -> type[VaecodecError]:
    """``cls`` that is also an :class:`OSError` (what Pillow users catch around ``load()``)."""
    if issubclass(cls, OSError):
        return cls
    doc = f"{cls.__name__} raised through Pillow: also an OSError, as Pillow's own formats raise."
    return type(cls.__name__, (cls, OSError), {"__module__": __name__, "__doc__": doc})


def _reraise(e: VaecodecError, name: str) -> VaecodecError:
    msg = str(e) if str(e).startswith(f"{name}: ") else f"{name}: {e}"
    return _pillow_error(type(e))(msg)


def _accept(prefix: bytes) -> bool:
    return container.is_vae(prefix)


def _name(fp: Any, filename: Any) -> str:
    if filename:
        return filename.decode(errors="replace") if isinstance(filename, bytes) else str(filename)
    return container.source_name(fp) or "<.vae data>"


class VaeImageFile(ImageFile.ImageFile):
    """A ``.vae`` image: the header is read by ``open``, the pixels are decoded by ``load()``."""

    format = FORMAT
    format_description = "vaecodec learned image"

    header: container.Header

    def _open(self) -> None:
        name = _name(self.fp, self.filename)
        try:
            self.header = container.read_header(self.fp)
        except UnsupportedVersionError as e:
            raise _reraise(e, name) from None
        except VaecodecError as e:
            msg = f"{name}: not a valid .vae file ({e})"
            raise SyntaxError(msg) from None
        self._mode = self.header.pixel_format.mode
        self._size = (self.header.width, self.header.height)
        # A placeholder tile: load() replaces it with the decoded pixels.
        self.tile = [ImageFile._Tile(FORMAT, (0, 0, *self.size), 0, None)]

    def load(self) -> Any:
        if self.tile and self.tile[0].codec_name == FORMAT:
            name = _name(self.fp, self.filename)
            if self.fp is None:
                msg = f"{name}: cannot load a closed image"
                raise ValueError(msg)
            self.fp.seek(0)
            data = self.fp.read()
            from .api import decode  # imports torch: only when pixels are wanted

            try:
                decoded = decode(data, output="pil")
            except VaecodecError as e:
                raise _reraise(e, name) from None
            if decoded.mode != self.mode or decoded.size != self.size:  # the codec's contract, checked
                msg = f"{name}: decoded {decoded.mode} {decoded.size}, header says {self.mode} {self.size}"
                raise _pillow_error(container.FormatError)(msg)
            self.info.update(decoded.info)
            # The decoded pixels become this image's; a raw tile instead would let Pillow mmap the .vae itself.
            self.im = decoded.im
            self.tile = []
            if self._exclusive_fp and self._close_exclusive_fp_after_loading:
                self.fp.close()
                self.fp = None
        return super().load()


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from .api import encode  # imports torch
    from .image import exif_block

    info = im.encoderinfo
    for key in ("icc_profile", "exif"):
        if key not in info:
            continue
        value = info[key]
        if isinstance(value, Image.Exif):
            value = value.tobytes()
        if key == "exif" and value and exif_block(value) is None:
            msg = f"{_name(fp, filename)}: exif must be an EXIF block (TIFF data, with or without 'Exif\\0\\0'), not {bytes(value[:8])!r}..."
            raise ValueError(msg)
        im = im.copy()
        im.info.pop(key, None)
        if value:
            im.info[key] = value
    options = {k: info[k] for k in SAVE_OPTIONS if k in info}
    fp.write(encode(im, **options))


def register() -> None:
    """Register the format with Pillow (``import vaecodec`` does it; calling again is harmless)."""
    Image.register_open(FORMAT, VaeImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, "image/x-vae")
