"""The checkerboard context (second model generation): exact parameters, two-pass coding, function kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import natural_like
from vaecodec import container, latent_coding
from vaecodec.codec import Codec
from vaecodec.errors import DesyncError
from vaecodec.exact import ExactContext, ExactEntropyParameters
from vaecodec.model import checkerboard_mask


@pytest.fixture(scope="module")
def ctx_model(tiny_ctx_model):
    return tiny_ctx_model


@pytest.fixture(scope="module")
def ctx_codec(ctx_model):
    return Codec.from_model(ctx_model, model_id="ctx@0", tag=b"ctx0")


def _hyper(model, x, level):
    with torch.no_grad():
        lv = torch.full((1,), level)
        y = model.g_a(x) * model.gains(lv)[0]
        z = model.h_a(y) * model.gains(lv)[2]
        med = model.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
        zs = torch.round(z - med).to(torch.int32)
        idx, mu = ExactEntropyParameters.from_model(model)(zs, level)
    anchor = checkerboard_mask(*y.shape[-2:], anchors=True)
    return y, idx, mu, (torch.round(y - mu) + mu) * anchor, anchor


def test_exact_context_matches_int64_reference_and_float_model(ctx_model):
    x = torch.from_numpy(natural_like(128, 192, seed=3)).permute(2, 0, 1)[None].float() / 255
    level = 5.3
    y, idx, mu, y_hat_a, anchor = _hyper(ctx_model, x, level)
    ec = ExactContext(ctx_model)
    i1, m1 = ec(idx, mu, y_hat_a, level)
    i2, m2 = ec(idx, mu, y_hat_a, level, reference=True)
    assert torch.equal(i1, i2) and torch.equal(m1, m2)
    na = (anchor == 0).expand_as(idx)
    assert (i1[na] != idx[na]).any(), "a random context must move some tables"
    with torch.no_grad():
        s_na, m_na = ctx_model.context_params(y_hat_a, ctx_model.gaussian_conditional.scale_table[idx.long()],
                                              mu, torch.full((1,), level))
    float_idx = ctx_model.gaussian_conditional.build_indexes(s_na)
    assert (float_idx[na] != i1[na]).float().mean() < 0.01
    assert (m_na[na] - m1[na]).abs().max() < 0.01


def test_context_tiles_give_the_whole_image_result(ctx_codec, monkeypatch):
    x = torch.from_numpy(natural_like(256, 320, seed=4)).permute(2, 0, 1)[None].float() / 255
    level = 3.0
    _, idx, mu, y_hat_a, _ = _hyper(ctx_codec.model, x, level)
    whole = ctx_codec.coder.context_params(idx.to(torch.uint8), mu, y_hat_a, level)
    monkeypatch.setattr(latent_coding, "EXACT_TILE", 5)
    tiled = ctx_codec.coder.context_params(idx.to(torch.uint8), mu, y_hat_a, level)
    assert torch.equal(whole[0], tiled[0]) and torch.equal(whole[1], tiled[1])
    # in place (what encode and decode use): the same results, written over the inputs
    idx_in, mu_in = idx.to(torch.uint8), mu.clone()
    inplace = ctx_codec.coder.context_params(idx_in, mu_in, y_hat_a, level, inplace=True)
    assert inplace[0] is idx_in and inplace[1] is mu_in
    assert torch.equal(whole[0], idx_in) and torch.equal(whole[1], mu_in)
    assert not torch.equal(mu_in, mu)  # the context moved some means


@pytest.mark.parametrize("size", [(1, 1), (64, 64), (100, 150)])
@pytest.mark.parametrize("quality", [0, 55.5, 100])
def test_two_pass_round_trip_decodes_the_encoders_latents(ctx_codec, size, quality):
    img = natural_like(*size, seed=sum(size))
    data = ctx_codec.encode(img, quality=quality)
    vf = container.unpack(data)
    assert len(vf.y) == 2  # one band of anchors, one of the rest
    h = vf.header
    y = ctx_codec._analysis(img[None] if img.ndim == 3 else np.repeat(img[None, ..., None], 3, -1), h.quality)
    y_hat = ctx_codec._decode_latents(vf, lambda name, t: t)
    # the decoder found the encoder's symbols and means: every latent is within half a step of y
    assert float((y_hat - y).abs().max()) <= 0.5 + 1e-3
    assert ctx_codec.decode(data).shape == img.shape


def test_two_pass_index_crc_covers_the_second_pass(ctx_codec, monkeypatch):
    data = ctx_codec.encode(natural_like(64, 96, seed=5), quality=60)
    vf = container.unpack(data)
    orig = latent_coding.CheckerboardCoder.context_params

    def shifted(self, indexes, means, y_hat_anchors, level, **kw):
        idx, mu = orig(self, indexes, means, y_hat_anchors, level, **kw)
        na = torch.from_numpy(~self.anchors(*idx.shape[-2:]))
        return torch.where(na, (idx.int() + 1).clamp(max=63).to(torch.uint8), idx), mu

    monkeypatch.setattr(latent_coding.CheckerboardCoder, "context_params", shifted)
    with pytest.raises(DesyncError, match="entropy parameters differ"):
        ctx_codec._decode_latents(vf, lambda name, t: t)


def test_bands_are_split_in_both_passes(ctx_codec, monkeypatch):
    monkeypatch.setattr(latent_coding, "Y_CHUNK_SYMBOLS", 24 * 4 * 3)  # 3 latent rows per band at 64 px wide
    img = natural_like(300, 64, seed=6)
    data = ctx_codec.encode(img, quality=20)
    assert len(container.unpack(data).y) == 14  # 7 bands of anchors, 7 of the rest
    assert ctx_codec.decode(data).shape == img.shape


@pytest.mark.slow
def test_zero_context_grown_from_msh14_keeps_its_function(shipped_codec):
    from vaecodec.training.context import grow_from
    from vaecodec.weights import load_state_dict

    model = grow_from(load_state_dict(shipped_codec.spec.path))
    model.update(force=True)
    grown = Codec.from_model(model.eval(), model_id="grown@0", tag=b"grow")
    img = natural_like(96, 128, seed=7)
    for q in (10, 80):
        a, b = shipped_codec.encode(img, quality=q), grown.encode(img, quality=q)
        assert np.array_equal(shipped_codec.decode(a), grown.decode(b))
        assert abs(len(a) - len(b)) <= 16  # the same symbols in two passes: a few bytes of stream overhead


def test_coded_scales_pass_no_gradient_below_the_scale_bound():
    """A scale under the bound codes with the table's first entry: the rate must not push it lower."""
    from vaecodec.model import CheckerboardModel

    model = CheckerboardModel(N=8, M=4)
    bound = float(model.gaussian_conditional.lower_bound_scale.bound)
    raw = torch.tensor([-3.0, 0.5 * bound, 2.0, 8.0]).reshape(1, 4, 1, 1).requires_grad_(True)
    scales, _ = model.coded_params(raw, torch.zeros_like(raw))
    assert torch.all(scales.detach() >= bound * (1 - 1e-6))
    # symbols at the mean: the rate falls as the scale falls, so its gradient is positive everywhere
    _, lik = model.gaussian_conditional(torch.zeros_like(raw), scales, means=torch.zeros_like(raw), training=False)
    (-torch.log2(lik).sum()).backward()
    grad = raw.grad.flatten()
    assert grad[0] == 0 and grad[1] == 0, "a scale below the bound must not be pushed further down"
    assert grad[2] > 0 and grad[3] > 0
