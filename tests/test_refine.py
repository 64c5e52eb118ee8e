"""Encoder-side latent refinement (``refine=``): same decoder, lower rate–distortion cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ASSETS, natural_like
from vaecodec import refine as refine_mod
from vaecodec.codec import quality_to_level
from vaecodec.model import lambda_at


def cost(codec, data: bytes, rgb: np.ndarray, quality: float) -> float:
    """bpp + λ·MSE (8-bit units) of a file: the objective the level was trained for."""
    mse = float(np.mean((codec.decode(data).astype(np.float64) - rgb) ** 2))
    lam = float(lambda_at(torch.tensor([quality_to_level(quality, codec.model.levels)])))
    return 8 * len(data) / (rgb.shape[0] * rgb.shape[1]) + lam * mse


def test_refine_zero_is_the_plain_encoder(tiny_codec):
    rgb = natural_like(48, 80)
    assert tiny_codec.encode(rgb, quality=60, refine=0) == tiny_codec.encode(rgb, quality=60)


def test_refined_file_decodes_and_is_reproducible(tiny_codec):
    rgb = natural_like(48, 80, seed=3)
    stats: dict[str, float] = {}
    a = tiny_codec.encode(rgb, quality=60, refine=4, stats=stats)
    b = tiny_codec.encode(rgb, quality=60, refine=4)
    assert a == b  # the noise is seeded: a refined encode is reproducible
    assert stats["refine"] > 0
    assert tiny_codec.decode(a).shape == rgb.shape
    batch = tiny_codec.encode_batch([rgb, rgb], quality=60, refine=4)
    assert batch == [a, a]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", 1001])
def test_bad_refine_is_refused(tiny_codec, bad):
    with pytest.raises(ValueError, match="refine must be a whole number"):
        tiny_codec.encode(natural_like(16, 16), refine=bad)


def test_large_images_are_refined_tile_by_tile(tiny_model, monkeypatch):
    monkeypatch.setattr(refine_mod, "TILE", 4)
    rgb = natural_like(150, 200, seed=5)  # 10×13 latents: 3×4 tiles, ragged at the edges
    level = 4.0
    from vaecodec.codec import Codec

    codec = Codec.from_model(tiny_model)
    y = codec._analysis(rgb[None], 50.0)
    seen = []

    def fake(model, window, core, *args, **kwargs):  # "refines" a tile's core by +1
        seen.append((tuple(window.shape[-2:]), int(core.sum())))
        return window + core

    monkeypatch.setattr(refine_mod, "_refine_window", fake)
    out = refine_mod.refine_latents(tiny_model, y, rgb, level, 2)
    assert len(seen) == 12
    assert sum(n for _, n in seen) == y.shape[-2] * y.shape[-1]  # every latent is some tile's core once
    assert max(h for (h, _), _ in seen) <= 4 + 2 * refine_mod.MARGIN
    assert torch.equal(out, y + 1)  # each tile's core written back once, margins never


def test_refinement_lowers_the_cost_with_the_shipped_model(shipped_codec):
    rgb = np.asarray(Image.open(ASSETS / "coffee.png").convert("RGB"))[:192, :256]
    for q in (30.0, 80.0):
        plain = cost(shipped_codec, shipped_codec.encode(rgb, quality=q), rgb, q)
        refined = cost(shipped_codec, shipped_codec.encode(rgb, quality=q, refine=10), rgb, q)
        assert refined < plain * 0.995, f"q={q}: refined cost {refined:.4f} vs {plain:.4f}"


def test_a_diverging_refinement_falls_back_to_the_analysis(tiny_codec, monkeypatch):
    rgb = natural_like(48, 80, seed=7)
    plain = tiny_codec.encode(rgb, quality=60)
    gc = tiny_codec.model.gaussian_conditional
    monkeypatch.setattr(gc, "_likelihood", lambda *a, **k: torch.full_like(a[0], float("nan")))
    assert tiny_codec.encode(rgb, quality=60, refine=5) == plain  # a NaN cost keeps y as analysed


def test_refined_latents_the_tables_cannot_hold_are_not_coded(tiny_codec, monkeypatch):
    rgb = natural_like(48, 80, seed=8)
    plain = tiny_codec.encode(rgb, quality=60)
    monkeypatch.setattr(refine_mod, "refine_latents", lambda model, y, *a, **k: y * 1e7)
    assert tiny_codec.encode(rgb, quality=60, refine=5) == plain


def test_a_checkerboard_model_is_refined_against_its_contexts_rate(tiny_ctx_model, monkeypatch):
    from vaecodec.codec import Codec

    codec = Codec.from_model(tiny_ctx_model, model_id="tinyctx@0", tag=b"tinyctx")
    rgb = natural_like(48, 80, seed=5)
    calls = []
    real = type(tiny_ctx_model).latent_params

    def spy(self, y, scales, means, level):
        calls.append(tuple(y.shape))
        return real(self, y, scales, means, level)

    monkeypatch.setattr(type(tiny_ctx_model), "latent_params", spy)
    data = codec.encode(rgb, quality=60, refine=3)
    assert len(calls) >= 3  # the context gave the non-anchors' parameters at every step
    assert codec.decode(data).shape == rgb.shape
    assert data == codec.encode(rgb, quality=60, refine=3)
