"""The codec end to end with a tiny in-process model: sizes, modes, input kinds, determinism, errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import natural_like
from vaecodec import container, latent_coding
from vaecodec.codec import Codec
from vaecodec.errors import DesyncError, FormatError, ModelMismatchError, VaecodecError


def recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack(">I", zlib.crc32(data[:-4]))


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (64, 64), (511, 257), (512, 768)])
def test_round_trip_sizes(tiny_codec, size):
    a = natural_like(*size)
    data = tiny_codec.encode(a, quality=50)
    out = tiny_codec.decode(data)
    assert out.shape == a.shape and out.dtype == np.uint8
    h = container.read_header(data)
    assert (h.height, h.width, h.quality) == (*size, 50.0)


@pytest.mark.parametrize(
    ("channels", "shape"), [(1, (21, 13)), (3, (21, 13, 3))],
)
def test_grayscale_and_rgb_keep_their_layout(tiny_codec, channels, shape):
    a = natural_like(21, 13, channels=channels)
    assert tiny_codec.decode(tiny_codec.encode(a)).shape == shape


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_kept_exactly(tiny_codec, mode):
    rgb = natural_like(30, 20)
    alpha = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (30, 1))
    im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert(mode)
    out = tiny_codec.decode(tiny_codec.encode(im), output="pil")
    assert out.mode == mode and out.size == im.size
    assert np.array_equal(np.asarray(out)[..., -1], np.asarray(im)[..., -1])


@pytest.mark.parametrize("output", ["numpy", "pil", "torch"])
def test_input_kinds_and_outputs(tiny_codec, output):
    a = natural_like(40, 24)
    inputs = [a, Image.fromarray(a), torch.from_numpy(a).permute(2, 0, 1).float() / 255]
    files = [tiny_codec.encode(x, quality=30) for x in inputs]
    assert files[0] == files[1] == files[2]
    out = tiny_codec.decode(files[0], output=output)
    if output == "numpy":
        assert out.shape == (40, 24, 3)
    elif output == "pil":
        assert out.size == (24, 40) and out.mode == "RGB"
    else:
        assert out.shape == (3, 40, 24) and out.dtype == torch.float32


def test_same_input_gives_identical_bytes(tiny_codec):
    a = natural_like(70, 90, seed=3)
    assert tiny_codec.encode(a, quality=60) == tiny_codec.encode(a, quality=60)


def test_batches_match_single_calls(tiny_codec):
    imgs = [natural_like(48, 80, seed=s) for s in range(3)]
    files = tiny_codec.encode_batch(imgs, quality=40)
    assert len(files) == 3
    for f, batch_decoded, img in zip(files, tiny_codec.decode_batch(files), imgs):
        assert container.read_header(f).quality == 40
        assert np.array_equal(batch_decoded, tiny_codec.decode(f))
        assert batch_decoded.shape == img.shape
    with pytest.raises(ValueError, match="one size"):
        tiny_codec.encode_batch([imgs[0], natural_like(10, 10)])
    assert tiny_codec.encode_batch([]) == []


def test_stats_report_stages(tiny_codec):
    st: dict = {}
    data = tiny_codec.encode(natural_like(20, 20), stats=st)
    assert {"analysis", "hyper", "entropy", "container"} <= st.keys() and all(v >= 0 for v in st.values())
    st = {}
    tiny_codec.decode(data, stats=st)
    assert {"container", "hyper", "entropy", "synthesis"} <= st.keys()


@pytest.mark.parametrize("q", [-1, 100.5, float("nan")])
def test_quality_out_of_range(tiny_codec, q):
    with pytest.raises(ValueError, match="quality"):
        tiny_codec.encode(natural_like(8, 8), quality=q)


def test_file_from_other_weights_is_refused(tiny_model, tiny_codec):
    data = tiny_codec.encode(natural_like(16, 16))
    other_tag = Codec.from_model(tiny_model, model_id="tiny@0", tag=b"othr")
    with pytest.raises(ModelMismatchError, match="other weights"):
        other_tag.decode(data)
    other_id = Codec.from_model(tiny_model, model_id="tiny@1", tag=b"tiny")
    with pytest.raises(ModelMismatchError, match="made with model tiny@0"):
        other_id.decode(data)


def test_index_crc_mismatch_raises_desync(tiny_codec):
    data = bytearray(tiny_codec.encode(natural_like(64, 64)))
    h = container.unpack(bytes(data)).header
    off = h.size_bytes - 4  # index_crc is the last header field
    struct.pack_into(">I", data, off, h.index_crc ^ 1)
    with pytest.raises(DesyncError, match="entropy parameters differ"):
        tiny_codec.decode(recrc(bytes(data)))


def test_large_images_split_y_into_bands(tiny_codec, monkeypatch):
    monkeypatch.setattr(latent_coding, "Y_CHUNK_SYMBOLS", 24 * 4 * 3)  # 3 latent rows per band at 64 px wide
    a = natural_like(300, 64)
    data = tiny_codec.encode(a, quality=20)
    vf = container.unpack(data)
    assert len(vf.y) == 7  # ceil(ceil(300/64)*4 / 3) = ceil(20/3)
    assert tiny_codec.decode(data).shape == a.shape
    # a file whose band count does not fit its size is refused before decoding y
    bad = container.pack(container.VaeFile(vf.header, vf.z, vf.y[:-1]))
    with pytest.raises(FormatError, match="y streams"):
        tiny_codec.decode(bad)


def test_cuda_device_is_refused_cleanly_without_cuda(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(VaecodecError, match="CUDA is not available"):
        Codec.from_model(tiny_model, device="cuda")


def test_network_stages_build_no_autograd_graph(tiny_codec):
    """Every transform the codec runs is under inference mode (no graph, no saved activations).

    The decorator once slid off the analysis unnoticed, since the bytes are the same either
    way, so this watches the modules themselves.
    """
    seen: dict[str, list[bool]] = {}

    def watch(name):
        def hook(module, args, out):
            seen.setdefault(name, []).append(torch.is_grad_enabled() or out.requires_grad)

        return hook

    model = tiny_codec.model
    stages = {"g_a": model.g_a, "h_a": model.h_a, "g_s": tiny_codec._g_s}
    handles = [m.register_forward_hook(watch(n)) for n, m in stages.items()]
    try:
        tiny_codec.decode(tiny_codec.encode(natural_like(40, 56), quality=50))
        tiny_codec.decode_batch(tiny_codec.encode_batch([natural_like(24, 24)] * 2, quality=20))
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(stages)
    assert not any(flag for flags in seen.values() for flag in flags), seen
