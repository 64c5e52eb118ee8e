"""The ``.vae`` container: every byte of the file format, and nothing else.

Standard library only (no torch, no numpy), so headers can be read instantly and the
parser can be reasoned about (and fuzzed) on its own. The layout is specified byte by
byte in ``docs/FORMAT.md``; ``tests/test_format_doc.py`` checks that document against
the constants below.

All integers are big-endian. A file is::

    header   magic, version, flags, model id, weights tag, size, pixel format,
             quality, index CRC                                  (22 + len(model id) bytes)
    streams  count (u8), then ``count`` u32 lengths, then the stream bytes in order:
             z, y chunk 0 .. y chunk k-1, [alpha plane], [ICC profile], [EXIF]
    crc      CRC32 (zlib) of every byte before it                (4 bytes)

Metadata: the ICC profile is stored as it is or zlib-compressed (whichever is smaller, flag
bit 1), the standard sRGB profile only as flag bit 3 (no stream), and EXIF zlib-compressed
(flag bit 2). A file without metadata has flags 0 and the same bytes as before these streams
existed.

:func:`unpack` checks magic, version, every field's range and limit, that the declared
lengths add up to exactly the file size, and the CRC, *before* returning any stream, so
no unchecked byte ever reaches the entropy decoder; it then inflates the metadata streams
(at most :data:`MAX_METADATA_BYTES` each).
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Union

from .errors import (
    ChecksumError,
    FormatError,
    LimitError,
    ReadError,
    TruncatedError,
    UnsupportedVersionError,
    VaecodecError,
)

MAGIC = b"\x89VAE"
FORMAT_VERSION = 1

#: flags byte: bit 0 = an ICC profile stream is present; bit 1 = that stream is zlib-compressed;
#: bit 2 = an EXIF stream (zlib-compressed) is present; bit 3 = the image is in the standard sRGB
#: colour space (its profile is not stored). Bits 4-7 are reserved (0).
FLAG_ICC = 0x01
FLAG_ICC_ZLIB = 0x02
FLAG_EXIF = 0x04
FLAG_SRGB = 0x08
KNOWN_FLAGS = FLAG_ICC | FLAG_ICC_ZLIB | FLAG_EXIF | FLAG_SRGB
#: Largest ICC profile or EXIF block a file may hold, inflated (checked while inflating).
MAX_METADATA_BYTES = 16 * 2**20
#: zlib level of the metadata streams.
METADATA_ZLIB_LEVEL = 9

MAX_MODEL_ID_BYTES = 32
#: Largest image side (the size fields are u16).
MAX_SIDE = 0xFFFF
#: Largest pixel count, Pillow's default ``Image.MAX_IMAGE_PIXELS``: checked before decoding allocates.
MAX_PIXELS = 89_478_485
#: Most streams one file may hold (z, y chunks, alpha, ICC, EXIF).
MAX_STREAMS = 255
QUALITY_SCALE = 100  # quality is stored as round(quality * 100) in a u16
MAX_QUALITY = 100.0
WEIGHTS_TAG_BYTES = 4

_PREFIX = struct.Struct(">4sBBB")  # magic, version, flags, model id length
_FIELDS = struct.Struct(">4sHHBHI")  # weights tag, height, width, pixel format, quality·100, index CRC
_COUNT = struct.Struct(">B")
_LENGTH = struct.Struct(">I")
_CRC = struct.Struct(">I")


class PixelFormat(enum.IntEnum):
    """What the decoder returns. Alpha formats carry the alpha plane in their own stream."""

    RGB8 = 1
    L8 = 2
    RGBA8 = 3
    LA8 = 4

    @property
    def has_alpha(self) -> bool:
        return self in (PixelFormat.RGBA8, PixelFormat.LA8)

    @property
    def mode(self) -> str:
        """The matching Pillow mode."""
        return {1: "RGB", 2: "L", 3: "RGBA", 4: "LA"}[int(self)]


@dataclass(frozen=True)
class Header:
    """The fixed fields of a .vae file (what ``vaecodec info`` shows)."""

    model_id: str
    weights_tag: bytes
    height: int
    width: int
    pixel_format: PixelFormat
    quality: float
    index_crc: int
    #: The image has an ICC profile: stored in its own stream, or (``srgb``) the standard sRGB one.
    has_icc: bool = False
    format_version: int = FORMAT_VERSION
    #: The profile is the standard sRGB one, stored as a flag only (``has_icc`` is then True too).
    srgb: bool = False
    #: An EXIF stream is present.
    has_exif: bool = False

    @property
    def icc_stream(self) -> bool:
        """An ICC profile stream is present (a profile other than the standard sRGB one)."""
        return self.has_icc and not self.srgb

    @property
    def size_bytes(self) -> int:
        """Bytes these fields take in the file."""
        return _PREFIX.size + len(self.model_id) + _FIELDS.size


@dataclass(frozen=True)
class VaeFile:
    """A parsed file: the header and its streams.

    ``icc`` and ``exif`` hold the metadata itself (the profile's bytes; the EXIF TIFF structure,
    starting ``II*\\0`` or ``MM\\0*``); :func:`pack` compresses them and :func:`unpack` inflates them.
    A file whose header says ``srgb`` has no ICC stream (``icc`` is None).
    """

    header: Header
    z: bytes
    y: tuple[bytes, ...]
    alpha: bytes | None = None
    icc: bytes | None = None
    file_size: int = 0
    exif: bytes | None = None

    @property
    def streams(self) -> tuple[bytes, ...]:
        """The streams as stored in the file (metadata compressed), in file order."""
        return _stored_streams(self)[0]


def _stored_streams(f: VaeFile) -> tuple[tuple[bytes, ...], bool]:
    """``f``'s streams as stored (metadata compressed, each once), and whether the ICC one is zlib."""
    icc, icc_zlib = stored_icc(f.icc)
    extra = tuple(s for s in (f.alpha, icc, stored_exif(f.exif)) if s is not None)
    return (f.z, *f.y, *extra), icc_zlib


def stored_icc(icc: bytes | None) -> tuple[bytes | None, bool]:
    """An ICC profile as a file stores it, and whether that is zlib-compressed (when smaller)."""
    if icc is None:
        return None, False
    packed = zlib.compress(icc, METADATA_ZLIB_LEVEL)
    return (packed, True) if len(packed) < len(icc) else (icc, False)


def stored_exif(exif: bytes | None) -> bytes | None:
    """An EXIF block as a file stores it (zlib-compressed)."""
    return None if exif is None else zlib.compress(exif, METADATA_ZLIB_LEVEL)


def metadata_bytes(icc: bytes | None, exif: bytes | None) -> int:
    """Bytes the metadata adds to a file: its stored streams and their length fields."""
    streams = [s for s in (stored_icc(icc)[0], stored_exif(exif)) if s is not None]
    return sum(len(s) + _LENGTH.size for s in streams)


def _inflate(data: bytes, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_METADATA_BYTES + 1)
    except zlib.error as e:
        msg = f"{what} stream is corrupt (zlib: {e})"
        raise FormatError(msg) from None
    if len(out) > MAX_METADATA_BYTES:
        msg = f"{what} stream inflates to more than {MAX_METADATA_BYTES} bytes"
        raise LimitError(msg)
    if not d.eof:
        msg = f"{what} stream is truncated (incomplete zlib data)"
        raise TruncatedError(msg)
    if d.unused_data:
        msg = f"{len(d.unused_data)} unexpected bytes after the {what} stream's zlib data"
        raise FormatError(msg)
    return out


def overhead(n_streams: int, model_id_len: int) -> int:
    """Bytes a file spends outside its streams' content."""
    return _PREFIX.size + model_id_len + _FIELDS.size + _COUNT.size + n_streams * _LENGTH.size + _CRC.size


def _check_header(h: Header) -> None:
    if not _valid_model_id(h.model_id.encode("utf-8")):
        msg = f"model id must be 1..{MAX_MODEL_ID_BYTES} printable ASCII characters, got {h.model_id!r}"
        raise FormatError(msg)
    if len(h.weights_tag) != WEIGHTS_TAG_BYTES:
        msg = f"weights tag must be {WEIGHTS_TAG_BYTES} bytes, got {len(h.weights_tag)}"
        raise FormatError(msg)
    _check_size(h.height, h.width)
    if not 0 <= h.quality <= MAX_QUALITY:
        msg = f"quality must be in 0..{MAX_QUALITY:g}, got {h.quality}"
        raise FormatError(msg)
    if not 0 <= h.index_crc <= 0xFFFFFFFF:
        msg = f"index CRC must be a u32, got {h.index_crc}"
        raise FormatError(msg)


def _valid_model_id(raw: bytes) -> bool:
    return 1 <= len(raw) <= MAX_MODEL_ID_BYTES and all(0x20 < c < 0x7F for c in raw)


def _check_size(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        msg = f"image size {width}x{height} is outside 1..{MAX_SIDE} per side"
        raise LimitError(msg)
    if height * width > MAX_PIXELS:
        msg = f"image size {width}x{height} = {height * width} pixels exceeds the limit of {MAX_PIXELS}"
        raise LimitError(msg)


def pack(f: VaeFile) -> bytes:
    """Serialize a file. Raises :class:`FormatError` on a field out of range."""
    h = f.header
    _check_header(h)
    if h.pixel_format.has_alpha != (f.alpha is not None):
        msg = f"pixel format {h.pixel_format.name} {'needs' if h.pixel_format.has_alpha else 'takes no'} alpha stream"
        raise FormatError(msg)
    if h.icc_stream != (f.icc is not None):
        msg = "has_icc (without srgb) must match the presence of an ICC stream"
        raise FormatError(msg)
    if h.srgb and not h.has_icc:
        msg = "srgb needs has_icc (the standard sRGB profile is a profile)"
        raise FormatError(msg)
    if h.has_exif != (f.exif is not None):
        msg = "has_exif must match the presence of an EXIF stream"
        raise FormatError(msg)
    for what, meta in (("ICC profile", f.icc), ("EXIF block", f.exif)):
        if meta is not None and len(meta) > MAX_METADATA_BYTES:
            msg = f"{what} of {len(meta)} bytes exceeds the limit of {MAX_METADATA_BYTES}"
            raise LimitError(msg)
    if not f.y:
        msg = "a file needs at least one y stream"
        raise FormatError(msg)
    streams, icc_zlib = _stored_streams(f)
    if len(streams) > MAX_STREAMS:
        msg = f"{len(streams)} streams exceed the limit of {MAX_STREAMS}"
        raise LimitError(msg)
    mid = h.model_id.encode("ascii")
    flags = (FLAG_ICC if h.icc_stream else 0) | (FLAG_ICC_ZLIB if icc_zlib else 0)
    flags |= (FLAG_EXIF if h.has_exif else 0) | (FLAG_SRGB if h.srgb else 0)
    out = bytearray(_PREFIX.pack(MAGIC, FORMAT_VERSION, flags, len(mid)))
    out += mid
    out += _FIELDS.pack(
        h.weights_tag, h.height, h.width, int(h.pixel_format), round(h.quality * QUALITY_SCALE), h.index_crc
    )
    out += _COUNT.pack(len(streams))
    for s in streams:
        if len(s) > 0xFFFFFFFF:
            msg = f"stream of {len(s)} bytes exceeds the u32 length field"
            raise LimitError(msg)
        out += _LENGTH.pack(len(s))
    for s in streams:
        out += s
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


class _Reader:
    """Bounds-checked reads over a bytes object."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            msg = f"truncated: file ends at byte {len(self.data)} inside the {what} (needs {self.pos + n})"
            raise TruncatedError(msg)
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, s: struct.Struct, what: str) -> tuple:  # type: ignore[type-arg]
        return s.unpack(self.take(s.size, what))


def is_vae(prefix: bytes) -> bool:
    """True if ``prefix`` starts with the .vae magic (Pillow's ``_accept``)."""
    return bytes(prefix[: len(MAGIC)]) == MAGIC


def _parse_header(r: _Reader) -> Header:
    magic, version, flags, id_len = r.unpack(_PREFIX, "header")
    if magic != MAGIC:
        msg = f"not a .vae file (starts with {magic!r}, expected {MAGIC!r})"
        raise FormatError(msg)
    if version != FORMAT_VERSION:
        msg = f"file is format version {version}; this vaecodec reads version {FORMAT_VERSION}"
        raise UnsupportedVersionError(msg)
    if flags & ~KNOWN_FLAGS:
        msg = f"unknown flags 0x{flags:02x} (reserved bits must be 0; a newer vaecodec may read this file)"
        raise FormatError(msg)
    if flags & FLAG_ICC and flags & FLAG_SRGB:
        msg = f"flags 0x{flags:02x} declare both an ICC stream and the sRGB flag"
        raise FormatError(msg)
    if flags & FLAG_ICC_ZLIB and not flags & FLAG_ICC:
        msg = f"flags 0x{flags:02x} declare a compressed ICC stream but no ICC stream"
        raise FormatError(msg)
    if not 1 <= id_len <= MAX_MODEL_ID_BYTES:
        msg = f"model id length {id_len} outside 1..{MAX_MODEL_ID_BYTES}"
        raise FormatError(msg)
    raw_id = r.take(id_len, "model id")
    if not _valid_model_id(raw_id):
        msg = f"model id {raw_id!r} is not printable ASCII"
        raise FormatError(msg)
    tag, height, width, pf, q, index_crc = r.unpack(_FIELDS, "header")
    _check_size(height, width)
    try:
        pixel_format = PixelFormat(pf)
    except ValueError:
        msg = f"unknown pixel format {pf}"
        raise FormatError(msg) from None
    if q > MAX_QUALITY * QUALITY_SCALE:
        msg = f"quality field {q / QUALITY_SCALE:g} exceeds {MAX_QUALITY:g}"
        raise FormatError(msg)
    return Header(
        model_id=raw_id.decode("ascii"), weights_tag=tag, height=height, width=width,
        pixel_format=pixel_format, quality=q / QUALITY_SCALE, index_crc=index_crc,
        has_icc=bool(flags & (FLAG_ICC | FLAG_SRGB)), srgb=bool(flags & FLAG_SRGB),
        has_exif=bool(flags & FLAG_EXIF),
    )


#: Most bytes the header fields can take (the longest model id): all :func:`read_header` reads of a file.
MAX_HEADER_BYTES = _PREFIX.size + MAX_MODEL_ID_BYTES + _FIELDS.size

#: What :func:`read_header` and ``vaecodec.decode`` accept, as ``PIL.Image.open`` does.
Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]


def source_name(source: Any) -> str | None:
    """The file name of a path or a named file object (for messages); None for bytes."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def read_source(source: Source, limit: int | None = None) -> bytes:
    """The bytes of a .vae source: bytes, bytearray or memoryview as they are; a path (``str`` or
    ``os.PathLike``) read from disk; a binary file object (anything with ``.read()``) read from its
    current position to its end.

    ``limit`` reads at most that many bytes, and a seekable file object is then put back where it
    was, so reading a header does not consume the stream. A missing or unreadable file raises
    :class:`ReadError` naming it.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data if limit is None else data[:limit]
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        try:
            with open(path, "rb") as f:
                return f.read() if limit is None else _read_up_to(f, limit)
        except FileNotFoundError:
            msg = f"{path}: no such file"
            raise ReadError(msg) from None
        except IsADirectoryError:
            msg = f"{path}: is a folder, not a file"
            raise ReadError(msg) from None
        except OSError as e:
            msg = f"{path}: cannot read ({e.strerror or e})"
            raise ReadError(msg) from None
    if callable(getattr(source, "read", None)):
        start = _tell(source) if limit is not None else None
        data = _binary(source.read()) if limit is None else _read_up_to(source, limit)
        if start is not None:
            source.seek(start)
        return data
    msg = f"expected bytes, a path or a binary file object, got {type(source).__name__}"
    raise TypeError(msg)


def _tell(f: Any) -> int | None:
    try:
        return f.tell() if f.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _read_up_to(f: Any, n: int) -> bytes:
    """Up to ``n`` bytes: short reads (pipes, raw streams) are continued until ``n`` or the end."""
    chunks: list[Any] = []
    got = 0
    while got < n:
        b = _binary(f.read(n - got))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _binary(data: Any) -> bytes:
    if data is None:  # a non-blocking stream with nothing to read yet
        return b""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        msg = f"expected a binary file object (open it with 'rb'); its read() returned {type(data).__name__}"
        raise TypeError(msg)
    return bytes(data)


@contextmanager
def naming(source: Any) -> Iterator[None]:
    """Prefix the file's name to a :class:`VaecodecError` raised inside, when ``source`` has a name."""
    try:
        yield
    except VaecodecError as e:
        name = source_name(source)
        if name is None or str(e).startswith(f"{name}: "):
            raise
        raise type(e)(f"{name}: {e}").with_traceback(e.__traceback__) from None


def read_header(source: Source) -> Header:
    """Parse and validate the header fields only (the CRC and streams are not checked).

    ``source`` is bytes, a path or a binary file object (:func:`read_source`); only the first
    :data:`MAX_HEADER_BYTES` are read, and a seekable file object is left where it was.
    """
    data = read_source(source, limit=MAX_HEADER_BYTES)
    with naming(source):
        return _parse_header(_Reader(data))


def unpack(data: bytes) -> VaeFile:
    """Parse and fully validate a file (fields, limits, lengths, CRC). Raises :class:`FormatError`."""
    data = bytes(data)
    if len(data) == 0:
        msg = "empty file (0 bytes)"
        raise TruncatedError(msg)
    r = _Reader(data)
    h = _parse_header(r)
    flags = _PREFIX.unpack_from(data)[2]
    (count,) = r.unpack(_COUNT, "stream count")
    fixed = 1 + int(h.pixel_format.has_alpha) + int(h.icc_stream) + int(h.has_exif)
    if count < fixed + 1:
        msg = f"{count} streams declared; this header needs at least {fixed + 1}"
        raise FormatError(msg)
    lengths = [r.unpack(_LENGTH, "stream lengths")[0] for _ in range(count)]
    expected = r.pos + sum(lengths) + _CRC.size
    if expected != len(data):
        if expected > len(data):
            msg = f"truncated: streams declare {expected} bytes, file has {len(data)}"
            raise TruncatedError(msg)
        msg = f"{len(data) - expected} unexpected bytes after the end of the file"
        raise FormatError(msg)
    (crc,) = _CRC.unpack(data[-_CRC.size :])
    actual = zlib.crc32(data[: -_CRC.size])
    if crc != actual:
        msg = f"corrupt: CRC32 is 0x{actual:08x}, the file says 0x{crc:08x}"
        raise ChecksumError(msg)
    streams = [r.take(n, f"stream {i}") for i, n in enumerate(lengths)]
    n_y = count - fixed
    exif = _inflate(streams.pop(), "EXIF") if h.has_exif else None
    icc = streams.pop() if h.icc_stream else None
    if icc is not None and flags & FLAG_ICC_ZLIB:
        icc = _inflate(icc, "ICC profile")
    alpha = streams.pop() if h.pixel_format.has_alpha else None
    return VaeFile(header=h, z=streams[0], y=tuple(streams[1 : 1 + n_y]), alpha=alpha, icc=icc,
                   file_size=len(data), exif=exif)
