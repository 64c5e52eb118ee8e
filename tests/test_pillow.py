"""The Pillow plugin, through Pillow's public API only (``Image.open``, ``load``, ``save``)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from conftest import natural_like
from PIL import Image, ImageCms, UnidentifiedImageError

import vaecodec

H, W, Q = 24, 40, 60


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return natural_like(H, W, seed=5)


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory, rgb):
    path = tmp_path_factory.mktemp("pillow") / "x.vae"
    Image.fromarray(rgb).save(path, quality=Q)
    return path


def test_vae_is_a_registered_extension_after_import_vaecodec():
    assert Image.registered_extensions()[".vae"] == "VAE"
    assert Image.MIME["VAE"] == "image/x-vae"


def test_save_encodes_through_the_public_api(vae_path, rgb):
    data = vae_path.read_bytes()
    assert data == vaecodec.encode(rgb, quality=Q)
    assert vaecodec.read_header(data).quality == Q


def test_save_to_a_file_object_with_format_and_options(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="VAE", quality=10)
    assert buf.getvalue() == vaecodec.encode(rgb, quality=10)


def test_open_reads_the_header_and_load_decodes(vae_path):
    with Image.open(vae_path) as im:
        assert (im.format, im.size, im.mode) == ("VAE", (W, H), "RGB")
        assert im.header.quality == Q
        im.load()
        assert np.array_equal(np.asarray(im), vaecodec.decode(vae_path))


def test_open_imports_no_torch_and_load_does(vae_path):
    code = (
        "import sys, vaecodec\nfrom PIL import Image\n"
        "im = Image.open(sys.argv[1])\n"
        "assert (im.format, im.size, im.mode) == ('VAE', (40, 24), 'RGB'), (im.format, im.size, im.mode)\n"
        "assert 'torch' not in sys.modules, 'Image.open imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(vae_path)], check=True, timeout=60)


def test_pixel_access_and_conversions_load_implicitly(vae_path):
    with Image.open(vae_path) as im:
        gray = im.convert("L")
        assert gray.size == (W, H)
        assert im.getpixel((0, 0)) == tuple(vaecodec.decode(vae_path)[0, 0])


def test_open_from_bytes_io_and_from_an_open_file(vae_path):
    expected = vaecodec.decode(vae_path)
    with Image.open(io.BytesIO(vae_path.read_bytes())) as im:
        assert np.array_equal(np.asarray(im), expected)
    with open(vae_path, "rb") as f, Image.open(f, formats=["VAE"]) as im:
        assert np.array_equal(np.asarray(im), expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA"])
def test_modes_survive_save_and_open(tmp_path, rgb, mode):
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    src = Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert(mode)
    src.save(tmp_path / "m.vae")
    with Image.open(tmp_path / "m.vae") as im:
        assert im.mode == mode
        out = np.asarray(im)
    if "A" in mode:
        assert np.array_equal(out[..., -1], np.asarray(src)[..., -1])  # alpha is lossless


def test_icc_profile_is_kept_on_load_and_can_be_replaced_or_dropped(tmp_path, rgb):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()  # not sRGB: stored as it is
    src = Image.fromarray(rgb)
    src.info["icc_profile"] = icc
    src.save(tmp_path / "kept.vae")
    with Image.open(tmp_path / "kept.vae") as im:
        im.load()
        expected = vaecodec.decode(tmp_path / "kept.vae", output="pil").info["icc_profile"]
        assert expected and im.info["icc_profile"] == expected
    src.save(tmp_path / "dropped.vae", icc_profile=None)
    with Image.open(tmp_path / "dropped.vae") as im:
        im.load()
        assert "icc_profile" not in im.info
    Image.fromarray(rgb).save(tmp_path / "given.vae", icc_profile=icc)
    assert vaecodec.read_header(tmp_path / "given.vae").has_icc


def test_exif_is_kept_on_load_and_can_be_given_or_dropped_on_save(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Camera maker", "Camera model"  # Make, Model
    src = Image.fromarray(rgb)
    src.save(tmp_path / "given.vae", exif=exif)  # an Image.Exif, as Pillow's JPEG and WebP take
    Image.fromarray(rgb).save(tmp_path / "bytes.vae", exif=exif.tobytes())  # or its bytes
    for name in ("given.vae", "bytes.vae"):
        with Image.open(tmp_path / name) as im:
            im.load()
            got = im.getexif()
            assert (got[0x010F], got[0x0110]) == ("Camera maker", "Camera model")
    src.info["exif"] = exif.tobytes()
    src.save(tmp_path / "kept.vae")  # the image's own EXIF, kept by default
    assert vaecodec.read_header(tmp_path / "kept.vae").has_exif
    src.save(tmp_path / "dropped.vae", exif=None)
    assert not vaecodec.read_header(tmp_path / "dropped.vae").has_exif
    with pytest.raises(ValueError, match="bad.vae: exif must be an EXIF block"):
        Image.fromarray(rgb).save(tmp_path / "bad.vae", exif=b"not exif data")
    assert not (tmp_path / "bad.vae").exists()  # Pillow removes the file it created


def test_a_file_that_is_not_vae_is_unidentified(tmp_path, rgb):
    path = tmp_path / "fake.vae"
    Image.fromarray(rgb).save(path, format="PNG")  # a PNG named .vae opens as the PNG it is
    with Image.open(path) as im:
        assert im.format == "PNG"
    path.write_bytes(b"not an image at all")
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)


@pytest.mark.parametrize("cut", [5, 12, 20])
def test_a_truncated_or_malformed_header_is_unidentified(tmp_path, vae_path, cut):
    path = tmp_path / "head.vae"
    path.write_bytes(vae_path.read_bytes()[:cut])
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)
    bad_id = bytearray(vae_path.read_bytes())
    bad_id[7] = 0x07  # a control character in the model id
    path.write_bytes(bytes(bad_id))
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)


def test_a_newer_format_version_says_so_on_open(tmp_path, vae_path):
    data = bytearray(vae_path.read_bytes())
    data[4] = 99
    path = tmp_path / "future.vae"
    path.write_bytes(bytes(data))
    with pytest.raises(vaecodec.UnsupportedVersionError, match=r"future\.vae: file is format version 99") as e:
        Image.open(path)
    assert isinstance(e.value, OSError)


def test_a_truncated_body_opens_and_fails_on_load_as_pillow_formats_do(tmp_path, vae_path):
    data = vae_path.read_bytes()
    path = tmp_path / "cut.vae"
    path.write_bytes(data[: len(data) - 7])
    with Image.open(path) as im:
        assert im.size == (W, H)
        with pytest.raises(OSError, match=r"cut\.vae: truncated") as e:
            im.load()
    assert isinstance(e.value, vaecodec.TruncatedError)


def test_a_corrupt_body_fails_on_load_with_a_checksum_error(tmp_path, vae_path):
    data = bytearray(vae_path.read_bytes())
    data[-6] ^= 0x55  # a stream byte (the CRC is the last 4)
    path = tmp_path / "flip.vae"
    path.write_bytes(bytes(data))
    with Image.open(path) as im, pytest.raises(vaecodec.ChecksumError, match=r"flip\.vae: corrupt") as e:
        im.load()
    assert isinstance(e.value, OSError)
