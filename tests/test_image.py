"""Input conversion policy: every kind and mode a user has becomes the documented planes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import natural_like
from vaecodec.container import PixelFormat
from vaecodec.errors import ImageError
from vaecodec.image import assemble, decode_alpha, encode_alpha, open_image, to_output, to_planes


def test_rgb_array_passes_through():
    a = natural_like(9, 7)
    p = to_planes(a)
    assert p.pixel_format is PixelFormat.RGB8 and np.array_equal(p.rgb, a)


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 1)])
def test_grayscale_array(shape):
    a = natural_like(9, 7, channels=1).reshape(shape)
    p = to_planes(a)
    assert p.pixel_format is PixelFormat.L8
    assert np.array_equal(p.rgb[..., 0], a.reshape(9, 7)) and np.array_equal(p.rgb[..., 0], p.rgb[..., 2])


def test_rgba_array_keeps_alpha():
    a = np.dstack([natural_like(5, 6), np.arange(30, dtype=np.uint8).reshape(5, 6)])
    p = to_planes(a)
    assert p.pixel_format is PixelFormat.RGBA8 and np.array_equal(p.alpha, a[..., 3])


def test_uint16_and_float_arrays_scale_to_8_bits():
    a16 = np.array([[0, 257, 65535]], dtype=np.uint16)
    assert to_planes(a16).rgb[..., 0].tolist() == [[0, 1, 255]]
    af = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert to_planes(af).rgb[..., 0].tolist() == [[0, 128, 255]]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 2), np.uint8), "expected an H"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 3), np.int8), "dtype"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays_raise_image_error(bad, match):
    with pytest.raises(ImageError, match=match):
        to_planes(bad)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_arrays_outside_0_1_are_refused_not_clipped(dtype):
    a = natural_like(6, 5).astype(dtype)  # 0..255 values in a float array: a common mistake
    lo, hi = float(a.min()), float(a.max())
    with pytest.raises(ImageError, match=r"lie in \[0, 1\]") as e:
        to_planes(a)
    assert f"[{lo:g}, {hi:g}]" in str(e.value) and "divide by 255" in str(e.value)
    with pytest.raises(ImageError, match=r"\[-0.25, 0.5\]"):
        to_planes(np.array([[-0.25, 0.5]], dtype=dtype))
    with pytest.raises(ImageError, match=r"\[0, 1.5\]"):
        to_planes(np.array([[0.0, 1.5]], dtype=dtype))


def test_float_tensors_outside_0_1_are_refused():
    t = torch.from_numpy(natural_like(6, 5)).permute(2, 0, 1).float()
    with pytest.raises(ImageError, match=r"tensor: float32 values lie in \[\d+, \d+\]; float images must"):
        to_planes(t)
    assert np.array_equal(to_planes(t / 255).rgb, natural_like(6, 5))
    assert np.array_equal(to_planes((t / 255).bfloat16()).rgb, to_planes((t / 255).bfloat16().float()).rgb)


def test_shape_errors_show_the_shape_the_caller_passed():
    hwc = torch.from_numpy(natural_like(8, 5))  # H×W×3, not C×H×W
    with pytest.raises(ImageError, match=r"got shape \(8, 5, 3\) \(H×W×C\? use t.permute\(2, 0, 1\)\)"):
        to_planes(hwc)
    with pytest.raises(ImageError, match=r"got shape \(1, 8, 5, 3\)"):
        to_planes(hwc[None])
    with pytest.raises(ImageError, match=r"got shape \(2, 3, 4, 4\)"):
        to_planes(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ImageError, match=r"got shape \(2, 4, 4\)"):
        to_planes(torch.zeros(2, 4, 4))
    with pytest.raises(ImageError, match=r"got shape \(3, 8, 5\) \(C×H×W\? use a.transpose"):
        to_planes(natural_like(8, 5).transpose(2, 0, 1).copy())


def test_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="PIL image, numpy array or torch tensor"):
        to_planes([[1, 2, 3]])


def test_tensor_inputs():
    a = natural_like(8, 5)
    t = torch.from_numpy(a).permute(2, 0, 1)
    assert np.array_equal(to_planes(t).rgb, a)
    assert np.array_equal(to_planes(t[None].float() / 255).rgb, a)
    with pytest.raises(ImageError):
        to_planes(torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("RGB", PixelFormat.RGB8), ("L", PixelFormat.L8), ("1", PixelFormat.L8), ("P", PixelFormat.RGB8),
     ("CMYK", PixelFormat.RGB8), ("YCbCr", PixelFormat.RGB8), ("RGBA", PixelFormat.RGBA8),
     ("LA", PixelFormat.LA8), ("I;16", PixelFormat.L8), ("I", PixelFormat.L8), ("F", PixelFormat.L8)],
)
def test_pil_modes(mode, expected):
    im = Image.fromarray(natural_like(12, 10)).convert(mode)
    p = to_planes(im)
    assert p.pixel_format is expected and p.rgb.shape == (12, 10, 3) and p.rgb.dtype == np.uint8


def test_palette_with_transparency_keeps_alpha():
    im = Image.new("P", (4, 3))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.info["transparency"] = 0
    p = to_planes(im)
    assert p.pixel_format is PixelFormat.RGBA8
    assert p.alpha[1, 1] == 255 and p.alpha[0, 0] == 0


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    assert open_image(str(path)).rgb[..., 0].tolist() == [[0, 4, 117, 255]]


def test_exif_orientation_is_applied(tmp_path):
    a = natural_like(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)
    p = open_image(str(path))
    assert (p.height, p.width) == (20, 10)


def test_icc_profile_is_carried(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "icc.png"
    Image.fromarray(natural_like(6, 6)).save(path, icc_profile=icc)
    p = open_image(str(path))
    assert p.icc == icc
    out = to_output(assemble(p.rgb, p.pixel_format, None), "pil", p.icc)
    assert out.info["icc_profile"] == icc


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "PPM"])
def test_reads_common_formats(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(natural_like(16, 12)).save(path, format=fmt)
    assert open_image(str(path)).rgb.shape == (16, 12, 3)


def test_unreadable_files_raise_image_error(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for path, match in [(tmp_path / "junk.png", "not a readable image"), (tmp_path / "none.png", "no such file"),
                        (tmp_path, "folder")]:
        with pytest.raises(ImageError, match=match):
            open_image(str(path))


def test_alpha_plane_round_trip_is_lossless_and_checked():
    alpha = np.random.default_rng(0).integers(0, 256, (7, 9), dtype=np.uint8)
    data = encode_alpha(alpha)
    assert np.array_equal(decode_alpha(data, 7, 9), alpha)
    from vaecodec.errors import FormatError

    with pytest.raises(FormatError, match="alpha plane"):
        decode_alpha(data, 9, 7)
    with pytest.raises(FormatError, match="corrupt"):
        decode_alpha(b"garbage", 7, 9)


@pytest.mark.parametrize("output", ["numpy", "pil", "torch"])
def test_outputs(output):
    a = natural_like(4, 3)
    out = to_output(a, output)
    back = to_planes(out).rgb
    assert np.array_equal(back, a)
    if output == "pil":
        buf = io.BytesIO()
        out.save(buf, format="PNG")
