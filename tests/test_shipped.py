"""End to end with the shipped weights: the product's promises on real photographs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import ASSETS
from vaecodec import cli, container
from vaecodec.weights import get_spec, sha256_file

COFFEE = ASSETS / "coffee.png"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def jpeg_at_size(rgb: np.ndarray, max_bytes: int) -> tuple[int, float]:
    """Largest-quality Pillow JPEG (4:2:0, optimize) not larger than ``max_bytes``: (bytes, PSNR)."""
    best = None
    for q in range(1, 96):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=q, subsampling="4:2:0", optimize=True)
        if buf.tell() > max_bytes:
            break
        best = (buf.tell(), psnr(rgb, np.asarray(Image.open(buf).convert("RGB"))))
    assert best is not None, "JPEG at quality 1 is already larger"
    return best


def test_shipped_weights_match_the_manifest():
    from vaecodec.weights import available_models

    specs = available_models()
    assert get_spec() in specs
    for spec in specs:  # the default and the older generations whose files must keep decoding
        assert sha256_file(spec.path) == spec.sha256, spec.model_id


@pytest.fixture(scope="module")
def kodim23_round_trip(tmp_path_factory):
    from conftest import KODAK

    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found at {KODAK} (the ../shared folder is absent)")
    src, tmp = KODAK / "kodim23.png", tmp_path_factory.mktemp("k23")
    runner = CliRunner()
    r = runner.invoke(cli.main, ["encode", str(src), "-o", str(tmp / "k.vae"), "-q", "50"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli.main, ["decode", str(tmp / "k.vae"), "-o", str(tmp / "k.png")])
    assert r.exit_code == 0, r.stderr
    return Image.open(src), Image.open(tmp / "k.png"), (tmp / "k.vae").stat().st_size


def test_cli_round_trip_keeps_size_and_mode(kodim23_round_trip):
    original, decoded, size = kodim23_round_trip
    assert decoded.size == original.size and decoded.mode == original.mode
    assert 0 < size < 768 * 512 * 3


def test_cli_round_trip_beats_jpeg_on_kodim23(kodim23_round_trip):
    original, decoded, size = kodim23_round_trip
    ours = psnr(np.asarray(original), np.asarray(decoded))
    jpeg_bytes, jpeg_psnr = jpeg_at_size(np.asarray(original), size)
    assert ours > jpeg_psnr, f"vaecodec {ours:.2f} dB at {size} B vs JPEG {jpeg_psnr:.2f} dB at {jpeg_bytes} B"


def test_beats_jpeg_on_the_bundled_sample(shipped_codec):
    rgb = np.asarray(Image.open(COFFEE).convert("RGB"))
    for q in (25, 75):
        data = shipped_codec.encode(rgb, quality=q)
        ours = psnr(rgb, shipped_codec.decode(data))
        _, jpeg_psnr = jpeg_at_size(rgb, len(data))
        assert ours > jpeg_psnr, f"q={q}: {ours:.2f} dB vs JPEG {jpeg_psnr:.2f} dB at {len(data)} bytes"


def test_quality_is_monotone(shipped_codec):
    rgb = np.asarray(Image.open(COFFEE).convert("RGB"))
    sizes, quality = [], []
    for q in (0, 20, 40, 60, 80, 100):
        data = shipped_codec.encode(rgb, quality=q)
        sizes.append(len(data))
        quality.append(psnr(rgb, shipped_codec.decode(data)))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert quality == sorted(quality), quality


def test_target_bpp_lands_within_5_percent(shipped_codec):
    rgb = np.asarray(Image.open(COFFEE).convert("RGB"))
    for target in (0.6, 1.2):
        data = shipped_codec.encode(rgb, target_bpp=target)
        bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
        assert abs(bpp - target) <= 0.05 * target, (target, bpp)
    from vaecodec.errors import VaecodecError

    with pytest.raises(VaecodecError, match="outside what this image can reach"):
        shipped_codec.encode(rgb, target_bpp=0.02)


def test_real_rate_is_close_to_the_model_estimate(shipped_codec):
    """The rANS streams cost what the priors predict (rate is tested, not only round trips)."""
    import torch

    from vaecodec.codec import quality_to_level

    rgb = np.asarray(Image.open(COFFEE).convert("RGB"))[:384, :576].copy()  # a multiple of 64: no padding
    data = shipped_codec.encode(rgb, quality=60)
    vf = container.unpack(data)
    coded = 8 * (len(vf.z) + sum(len(s) for s in vf.y))
    model = shipped_codec.model
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = model(x, torch.tensor([quality_to_level(60, model.levels)]))
    estimate = float(sum((-torch.log2(lk)).sum() for lk in out["likelihoods"].values()))
    assert abs(coded - estimate) / estimate < 0.05, (coded, estimate)
