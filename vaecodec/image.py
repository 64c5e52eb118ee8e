"""Pixels in and out: whatever image a caller has ↔ 8-bit planes the codec works on.

Input policy (what ``encode`` accepts and how it is converted, like cwebp/avifenc do):

* **PIL images** of any mode. EXIF orientation is applied first. ``RGB`` and ``L`` are coded as
  they are; ``RGBA``/``LA`` keep their alpha plane (coded losslessly in its own stream);
  ``P`` (palette) becomes ``RGB``, or ``RGBA`` when it has transparency; ``1`` becomes ``L``;
  ``CMYK``/``YCbCr``/``LAB``/``HSV`` become ``RGB``; 16-bit (``I;16*``, ``I``) is scaled to 8
  bits (value / 257, rounded) and ``F`` is clipped to 0..255: the codec is 8-bit. The ICC
  profile (``info["icc_profile"]``) and the EXIF block (``info["exif"]``, its orientation tag
  applied and removed) are carried through to the decoded image; a profile that is the
  standard sRGB one (:func:`is_srgb`) comes back as vaecodec's sRGB profile (:data:`SRGB_PROFILE`).
  The profile of a mode converted to RGB (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) is dropped: it
  no longer describes the pixels.
* **numpy arrays** H×W, H×W×1 (grayscale), H×W×3 (RGB) or H×W×4 (RGBA); uint8, uint16
  (scaled to 8 bits) or float in [0, 1].
* **torch tensors** C×H×W (or 1×C×H×W) with C in 1, 3, 4; float in [0, 1] or uint8.

Float arrays and tensors outside [0, 1] (such as 0..255 values in a float32 array), NaN or
infinity raise :class:`ImageError` naming the range found: nothing is clipped silently. Shape
errors report the shape the caller passed.

Images are padded to the model's downsampling factor by edge replication inside the codec,
and cropped back on decode, so any size from 1×1 up works.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from .container import MAX_PIXELS, MAX_SIDE, PixelFormat
from .errors import ImageError

if TYPE_CHECKING:
    import torch

OUTPUTS = ("numpy", "pil", "torch")


@dataclass
class Planes:
    """An image as the codec sees it: 8-bit colour planes, an optional alpha plane, metadata."""

    rgb: np.ndarray  # H×W×3 uint8 (grayscale replicated to 3 channels)
    pixel_format: PixelFormat
    alpha: np.ndarray | None = None  # H×W uint8
    icc: bytes | None = None
    exif: bytes | None = None  # the EXIF TIFF structure (II*\0 / MM\0*), orientation removed

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if a.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(a).all():
            msg = f"{what}: float image contains NaN or infinity"
            raise ImageError(msg)
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            hint = " (values 0..255? divide by 255 or pass uint8)" if hi > 1 and lo >= 0 else ""
            msg = (f"{what}: {a.dtype} values lie in [{lo:g}, {hi:g}]; float images must lie in [0, 1]{hint}")
            raise ImageError(msg)
        return np.rint(a.astype(np.float64) * 255).astype(np.uint8)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    msg = f"{what}: unsupported dtype {a.dtype} (use uint8, uint16 or float in [0, 1])"
    raise ImageError(msg)


def _check_size(h: int, w: int, what: str) -> None:
    if h < 1 or w < 1:
        msg = f"{what}: empty image ({w}x{h})"
        raise ImageError(msg)
    if h * w > MAX_PIXELS or max(h, w) > MAX_SIDE:
        msg = f"{what}: {w}x{h} exceeds the codec's limits ({MAX_PIXELS} pixels, {MAX_SIDE} per side)"
        raise ImageError(msg)


def from_array(a: np.ndarray, *, what: str = "array") -> Planes:
    """H×W, H×W×C (C in 1, 3, 4) array → :class:`Planes`."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        hint = " (C×H×W? use a.transpose(1, 2, 0))" if a.ndim == 3 and a.shape[0] in (1, 3, 4) else ""
        msg = f"{what}: expected an H×W, H×W×1, H×W×3 or H×W×4 array, got shape {tuple(a.shape)}{hint}"
        raise ImageError(msg)
    _check_size(a.shape[0], a.shape[1], what)
    a = _to_uint8(np.asarray(a), what)
    c = a.shape[2]
    if c == 1:
        return Planes(np.repeat(a, 3, axis=2), PixelFormat.L8)
    if c == 3:
        return Planes(np.ascontiguousarray(a), PixelFormat.RGB8)
    return Planes(np.ascontiguousarray(a[:, :, :3]), PixelFormat.RGBA8, alpha=np.ascontiguousarray(a[:, :, 3]))


def from_pil(im: Image.Image, *, what: str = "image") -> Planes:
    """Any Pillow image → :class:`Planes` (policy in the module docstring)."""
    icc = im.info.get("icc_profile") or None
    exif: bytes | None = None
    try:
        im = ImageOps.exif_transpose(im)
        exif = exif_block(im.info.get("exif"))
    except Exception:  # a broken EXIF block must not make the image unreadable (it is dropped)
        pass
    _check_size(im.height, im.width, what)
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.int64)
        a = np.clip(a, 0, 65535).astype(np.uint16)
        p = from_array(a, what=what)
    elif mode == "F":
        a = np.clip(np.asarray(im, dtype=np.float64), 0, 255)
        p = from_array(np.rint(a).astype(np.uint8), what=what)
    elif mode in ("L", "1"):
        p = from_array(np.asarray(im.convert("L")), what=what)
    elif mode in ("LA", "La", "PA") or (mode == "P" and "transparency" in im.info and _palette_is_gray(im)):
        la = np.asarray(im.convert("LA"))
        p = Planes(np.repeat(la[:, :, :1], 3, axis=2), PixelFormat.LA8, alpha=np.ascontiguousarray(la[:, :, 1]))
    elif mode in ("RGBA", "RGBa") or (mode == "P" and "transparency" in im.info):
        p = from_array(np.asarray(im.convert("RGBA")), what=what)
    else:  # RGB, P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        try:
            rgb = im.convert("RGB")
        except (ValueError, OSError) as e:
            msg = f"{what}: cannot convert mode {mode} to RGB ({e})"
            raise ImageError(msg) from None
        p = from_array(np.asarray(rgb), what=what)
    p.icc = None if mode in CONVERTED_MODES else icc
    p.exif = exif
    return p


#: Modes whose pixels change colour space when coded (to RGB): their profile no longer describes them.
CONVERTED_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


EXIF_PREFIX = b"Exif\0\0"  # what JPEG's APP1 segment (and Pillow's info["exif"]) puts before the TIFF data


def exif_block(raw: bytes | None) -> bytes | None:
    """Pillow's ``info["exif"]`` → the EXIF TIFF structure (prefix removed), or None if it is not one."""
    if not raw:
        return None
    data = bytes(raw)
    data = data.removeprefix(EXIF_PREFIX)
    return data if data[:4] in (b"II*\0", b"MM\0*") else None


# ---------------------------------------------------------------------------- sRGB

#: sRGB's colorants, D50-adapted (Bradford), as Little CMS's built-in sRGB profile stores them.
SRGB_COLORANTS = {
    b"rXYZ": (0x6FA0, 0x38F5, 0x0390), b"gXYZ": (0x6297, 0xB787, 0x18D9), b"bXYZ": (0x249F, 0x0F84, 0xB6C3)
}
#: The sRGB tone curve as an ICC parametric curve (type 3: g, a, b, c, d), s15Fixed16.
SRGB_CURVE = (0x26666, 0xF2A7, 0x0D59, 0x13D0, 0x0A5B)
_D50 = (0xF6D6, 0x10000, 0xD32D)
#: Bradford adaptation D65 → D50 (the chad tag), s15Fixed16.
_CHAD = (0x10C42, 0x05DE, -0x0CDB, 0x0793, 0xFD90, -0x045F, -0x025E, 0x03DC, 0xC06E)
COLORANT_TOLERANCE = 0.003
CURVE_TOLERANCE = 1 / 512
_CURVE_SAMPLES = 1024
_LUT_TAGS = (b"A2B0", b"A2B1", b"A2B2", b"B2A0", b"B2A1", b"B2A2", b"D2B0", b"D2B1", b"D2B2", b"D2B3",
             b"B2D0", b"B2D1", b"B2D2", b"B2D3")


def _s15(v: int) -> bytes:
    return struct.pack(">i", v)


def _mluc(text: str) -> bytes:
    raw = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(raw), 28) + raw


def _srgb_profile() -> bytes:
    """vaecodec's sRGB profile: ICC v4.3, display class, matrix/TRC, a fixed date (reproducible bytes)."""
    xyz = lambda v: b"XYZ \0\0\0\0" + b"".join(map(_s15, v))
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(map(_s15, SRGB_CURVE))
    tags = [
        (b"desc", _mluc("sRGB (vaecodec)")), (b"cprt", _mluc("No copyright, use freely")),
        (b"wtpt", xyz(_D50)), (b"chad", b"sf32\0\0\0\0" + b"".join(map(_s15, _CHAD))),
        *((sig, xyz(v)) for sig, v in SRGB_COLORANTS.items()),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body, placed = b"", b"", {}
    for sig, data in tags:
        if data not in placed:  # the three curves share one copy
            placed[data] = offset + len(body)
            body += data + b"\0" * (-len(data) % 4)
        table += struct.pack(">4sII", sig, placed[data], len(data))
    size = offset + len(body)
    header = (struct.pack(">I4sI4s4s4s6H4s", size, b"", 0x04300000, b"mntr", b"RGB ", b"XYZ ",
                          2026, 1, 1, 0, 0, 0, b"acsp")
              + bytes(28) + b"".join(map(_s15, _D50)) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


#: The profile attached to decoded images whose file says "sRGB" (ICC v4.3, matrix/TRC).
SRGB_PROFILE = _srgb_profile()


def _eval_curve(tag: bytes, x: float) -> float | None:
    """An ICC ``curv`` or ``para`` tone curve at ``x`` in [0, 1] (None for what this does not read)."""
    kind = tag[:4]
    if kind == b"curv" and len(tag) >= 12:
        (n,) = struct.unpack_from(">I", tag, 8)
        if len(tag) < 12 + 2 * n:
            return None
        if n == 0:
            return x
        if n == 1:
            return x ** (struct.unpack_from(">H", tag, 12)[0] / 256)
        pos = x * (n - 1)
        i = min(int(pos), n - 2)
        a, b = struct.unpack_from(">HH", tag, 12 + 2 * i)
        return (a + (b - a) * (pos - i)) / 65535
    if kind == b"para" and len(tag) >= 12:
        (fn,) = struct.unpack_from(">H", tag, 8)
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(fn)
        if count is None or len(tag) < 12 + 4 * count:
            return None
        p = [v / 65536 for v in struct.unpack_from(f">{count}i", tag, 12)]
        g, a, b, c, d, e, f = (p + [0.0] * 7)[:7]
        if fn == 0:
            return x**g
        if fn == 1:
            return (a * x + b) ** g if x >= -b / a else 0.0
        if fn == 2:
            return (a * x + b) ** g + c if x >= -b / a else c
        if fn == 3:
            return (a * x + b) ** g if x >= d else c * x
        return (a * x + b) ** g + e if x >= d else c * x + f
    return None


def _srgb_eotf(x: float) -> float:
    return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4


def is_srgb(icc: bytes | None) -> bool:
    """True if ``icc`` is a standard sRGB profile: an RGB display profile without lookup-table tags,
    whose colorants are within :data:`COLORANT_TOLERANCE` of sRGB's and whose three tone curves are
    within :data:`CURVE_TOLERANCE` of the sRGB curve. It then says no more than "these pixels are
    sRGB", and a file stores it as a flag (``docs/FORMAT.md``)."""
    if not icc or len(icc) < 132:
        return False
    if icc[36:40] != b"acsp" or icc[12:16] != b"mntr" or icc[16:20] != b"RGB " or icc[20:24] != b"XYZ ":
        return False
    (n,) = struct.unpack_from(">I", icc, 128)
    if n > 200 or len(icc) < 132 + 12 * n:
        return False
    tags: dict[bytes, bytes] = {}
    for i in range(n):
        sig, off, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        if off + size > len(icc):
            return False
        tags[sig] = icc[off : off + size]
    if any(t in tags for t in _LUT_TAGS):
        return False
    try:
        for sig, want in SRGB_COLORANTS.items():
            tag = tags[sig]
            if tag[:4] != b"XYZ " or len(tag) < 20:
                return False
            got = struct.unpack_from(">3i", tag, 8)
            if max(abs(g - w) for g, w in zip(got, want)) / 65536 > COLORANT_TOLERANCE:
                return False
        for sig in (b"rTRC", b"gTRC", b"bTRC"):
            for k in range(_CURVE_SAMPLES):
                x = k / (_CURVE_SAMPLES - 1)
                y = _eval_curve(tags[sig], x)
                if y is None or not math.isfinite(y) or abs(y - _srgb_eotf(x)) > CURVE_TOLERANCE:
                    return False
    except (KeyError, ZeroDivisionError, OverflowError, ValueError, struct.error):
        return False
    return True


def _palette_is_gray(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def from_tensor(t: torch.Tensor, *, what: str = "tensor") -> Planes:
    """C×H×W or 1×C×H×W tensor (float in [0, 1] or uint8) → :class:`Planes`.

    Errors report the shape the caller passed, not that of the H×W×C view made here.
    """
    shape = tuple(t.shape)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        hint = " (H×W×C? use t.permute(2, 0, 1))" if t.dim() == 3 and t.shape[2] in (1, 3, 4) else ""
        msg = f"{what}: expected a C×H×W or 1×C×H×W tensor with C in 1, 3, 4, got shape {shape}{hint}"
        raise ImageError(msg)
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()  # numpy has no bfloat16
    return from_array(t.permute(1, 2, 0).numpy(), what=what)


def to_planes(image: Any, *, what: str | None = None) -> Planes:
    """Dispatch on the input kind (PIL image, numpy array, torch tensor; Planes pass through)."""
    if isinstance(image, Planes):
        return image
    if isinstance(image, Image.Image):
        return from_pil(image, what=what or "image")
    if isinstance(image, np.ndarray):
        return from_array(image, what=what or "array")
    mod = type(image).__module__
    if mod.startswith("torch"):
        return from_tensor(image, what=what or "tensor")
    msg = f"{what or 'input'}: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}"
    raise TypeError(msg)


def open_image(path: str, data: bytes | None = None) -> Planes:
    """Read an image file (anything Pillow reads) into :class:`Planes`. ``data`` bypasses the file."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            return from_pil(im, what=str(path))
    except FileNotFoundError:
        msg = f"{path}: no such file"
        raise ImageError(msg) from None
    except IsADirectoryError:
        msg = f"{path}: is a folder, not an image"
        raise ImageError(msg) from None
    except Image.DecompressionBombError as e:
        msg = f"{path}: too many pixels ({e})"
        raise ImageError(msg) from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = f"{path}: not a readable image ({e})"
        raise ImageError(msg) from None


def encode_alpha(alpha: np.ndarray) -> bytes:
    """Alpha plane → lossless bytes (a grayscale PNG, which compresses flat planes to almost nothing)."""
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_alpha(data: bytes, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode_alpha`; checks the plane matches the image size."""
    from .errors import FormatError

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.size != (width, height) or im.mode != "L":
                msg = f"alpha plane is {im.mode} {im.size[0]}x{im.size[1]}, image is {width}x{height}"
                raise FormatError(msg)
            im.load()
            return np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, FormatError):
            raise
        msg = f"alpha plane is corrupt ({e})"
        raise FormatError(msg) from None


def assemble(rgb: np.ndarray, pixel_format: PixelFormat, alpha: np.ndarray | None) -> np.ndarray:
    """Decoded RGB (+ alpha) → the array for ``pixel_format`` (H×W for L8, H×W×C otherwise)."""
    if pixel_format in (PixelFormat.L8, PixelFormat.LA8):
        gray = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
        if pixel_format is PixelFormat.L8:
            return gray
        return np.dstack([gray, alpha])
    if pixel_format is PixelFormat.RGBA8:
        return np.dstack([rgb, alpha])
    return rgb


def to_output(a: np.ndarray, output: str, icc: bytes | None = None, exif: bytes | None = None) -> Any:
    """Assembled array → numpy (as is), PIL image (ICC profile and EXIF attached, as Pillow's readers
    do: ``info["icc_profile"]``, ``info["exif"]`` with its ``Exif\\0\\0`` prefix) or float C×H×W
    tensor in [0, 1]."""
    if output == "numpy":
        return a
    if output == "pil":
        mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.shape[2] if a.ndim == 3 else 2]
        if a.ndim == 3 and a.shape[2] == 2:
            mode = "LA"
        im = Image.fromarray(a, mode)
        if icc:
            im.info["icc_profile"] = icc
        if exif:
            im.info["exif"] = EXIF_PREFIX + exif
        return im
    if output == "torch":
        import torch

        t = torch.from_numpy(a if a.ndim == 3 else a[:, :, None]).permute(2, 0, 1)
        return t.float().div(255)
    msg = f"output must be one of {OUTPUTS}, got {output!r}"
    raise ValueError(msg)
