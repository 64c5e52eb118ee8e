"""The one-call functions ``vaecodec.encode``/``decode``/``read_header``, with the shipped model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

import vaecodec
from conftest import natural_like
from vaecodec.container import MAX_HEADER_BYTES, PixelFormat

H, W, Q = 32, 48, 60


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return natural_like(H, W, seed=3)


@pytest.fixture(scope="module")
def data(image) -> bytes:
    return vaecodec.encode(image, quality=Q)


@pytest.fixture(scope="module")
def decoded(data) -> np.ndarray:
    return vaecodec.decode(data)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / mse)


def test_round_trip(image, data, decoded):
    assert isinstance(data, bytes) and data[:4] == b"\x89VAE"
    assert decoded.shape == (H, W, 3) and decoded.dtype == np.uint8
    assert psnr(decoded, image) > 25
    h = vaecodec.read_header(data)
    assert (h.height, h.width, h.quality, h.pixel_format) == (H, W, Q, PixelFormat.RGB8)
    pil = vaecodec.decode(data, output="pil")
    assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), decoded)
    t = vaecodec.decode(data, output="torch")
    assert t.shape == (3, H, W) and t.dtype == torch.float32
    assert np.array_equal(np.rint(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8), decoded)


def test_float_inputs_in_0_1_code_like_uint8(image, data):
    assert vaecodec.encode(image.astype(np.float32) / 255, quality=Q) == data
    assert vaecodec.encode(torch.from_numpy(image).permute(2, 0, 1).double() / 255, quality=Q) == data


def test_float_inputs_outside_0_1_are_an_image_error(image):
    scaled = image.astype(np.float32)  # 0..255 in a float array: used to be clipped to white
    expected = rf"values lie in \[{scaled.min():g}, {scaled.max():g}\]; float images must lie in \[0, 1\]"
    with pytest.raises(vaecodec.ImageError, match=expected):
        vaecodec.encode(scaled)
    with pytest.raises(vaecodec.ImageError, match=r"tensor: float32 values lie in \[-0.5, 1\]"):
        vaecodec.encode(torch.linspace(-0.5, 1, 3 * 8 * 8).reshape(3, 8, 8))


def test_shape_errors_show_the_shape_passed(image):
    with pytest.raises(vaecodec.ImageError, match=rf"got shape \({H}, {W}, 3\)"):
        vaecodec.encode(torch.from_numpy(image))  # H×W×3: a tensor must be C×H×W


@pytest.fixture
def vae_path(tmp_path, data) -> Path:
    path = tmp_path / "image.vae"
    path.write_bytes(data)
    return path


SOURCES = {
    "bytes": lambda data, path: data,
    "bytearray": lambda data, path: bytearray(data),
    "memoryview": lambda data, path: memoryview(data),
    "str path": lambda data, path: str(path),
    "Path": lambda data, path: path,
    "open file": lambda data, path: path.open("rb"),
    "BytesIO": lambda data, path: io.BytesIO(data),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_decode_and_read_header_accept_sources(kind, data, decoded, vae_path):
    source = SOURCES[kind](data, vae_path)
    assert vaecodec.read_header(source) == vaecodec.read_header(data)
    assert np.array_equal(vaecodec.decode(source), decoded)  # read_header left a file object where it was
    if hasattr(source, "close"):
        source.close()


class OneWayStream:
    """A non-seekable binary stream that records how many bytes were asked of it (a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.consumed += len(b)
        return b


def test_read_header_reads_only_the_header(data, decoded):
    stream = OneWayStream(data)
    assert vaecodec.read_header(stream).width == W
    assert 0 < stream.consumed <= MAX_HEADER_BYTES < len(data)
    assert np.array_equal(vaecodec.decode(OneWayStream(data)), decoded)


def test_decode_reads_a_file_object_from_its_position(data, decoded):
    f = io.BytesIO(b"prefix" + data)
    f.seek(6)
    assert vaecodec.read_header(f).height == H and f.tell() == 6
    assert np.array_equal(vaecodec.decode(f), decoded)


@pytest.mark.parametrize("function", [vaecodec.read_header, vaecodec.decode])
def test_missing_file_and_folder_are_vaecodec_errors_naming_them(function, tmp_path):
    missing = tmp_path / "nope.vae"
    for source in (str(missing), missing):
        with pytest.raises(vaecodec.VaecodecError, match=r"nope\.vae: no such file") as e:
            function(source)
        assert type(e.value) is vaecodec.ReadError and isinstance(e.value, OSError)
    with pytest.raises(vaecodec.ReadError, match="is a folder"):
        function(tmp_path)


def test_errors_about_a_named_file_carry_its_name(data, vae_path, tmp_path):
    bad = bytearray(data)
    bad[-10] ^= 0xFF
    (tmp_path / "bad.vae").write_bytes(bytes(bad))
    with pytest.raises(vaecodec.ChecksumError, match=r"bad\.vae: corrupt"):
        vaecodec.decode(tmp_path / "bad.vae")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(vaecodec.FormatError, match=r"photo\.png: not a \.vae file"):
        vaecodec.read_header(tmp_path / "photo.png")
    with pytest.raises(vaecodec.TruncatedError, match=r"^truncated"):  # bytes have no name
        vaecodec.read_header(data[:10])


def test_other_sources_are_type_errors(vae_path):
    with pytest.raises(TypeError, match="bytes, a path or a binary file object, got int"):
        vaecodec.decode(123)
    with vae_path.open("r", encoding="latin-1") as text, pytest.raises(TypeError, match="binary file object"):
        vaecodec.read_header(text)


def test_encode_keeps_metadata_unless_told_not_to(image):
    from PIL import Image

    from test_metadata import DISPLAY_P3, assert_camera_exif, camera_exif

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", icc_profile=DISPLAY_P3, exif=camera_exif())
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.load()
        kept = vaecodec.encode(im, quality=Q)
        bare = vaecodec.encode(im, quality=Q, metadata=False)
    h = vaecodec.read_header(kept)
    assert h.has_icc and h.has_exif and not h.srgb
    out = vaecodec.decode(kept, output="pil")
    assert out.info["icc_profile"] == DISPLAY_P3
    assert_camera_exif(out.getexif())
    assert bare == vaecodec.encode(image, quality=Q)  # no metadata: the bytes of the bare pixels
    assert "icc_profile" not in vaecodec.decode(bare, output="pil").info


def test_one_call_functions_take_weights_and_deterministic(tmp_path, tiny_model, image, data):
    """What the CLI's --weights and --deterministic give, the one-call functions give too."""
    from vaecodec.errors import ModelMismatchError
    from vaecodec.training.export import export

    import copy

    w = tmp_path / "tiny.safetensors"
    export(copy.deepcopy(tiny_model), w, model_id="tiny@1")  # export rounds the weights in place
    mine = vaecodec.encode(image, quality=Q, weights=w)
    assert vaecodec.read_header(mine).model_id == "tiny@1"
    out = vaecodec.decode(mine, weights=str(w))
    assert out.shape == image.shape
    exact = vaecodec.Codec(weights=str(w), deterministic=True).decode(mine)
    assert np.array_equal(vaecodec.decode(mine, weights=w, deterministic=True), exact)
    with pytest.raises(ModelMismatchError):
        vaecodec.decode(data, weights=w)  # a file of the shipped model, other weights
    assert np.array_equal(vaecodec.decode(data, deterministic=True), vaecodec.Codec(deterministic=True).decode(data))
