"""Exact entropy parameters (vaecodec.exact): bit-identical under threads, batching and tiling."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaecodec.exact import MEAN_FRAC_BITS, MEAN_LIMIT, ExactEntropyParameters, symbols_from_z_hat
from vaecodec.model import HyperpriorModel

N, M = 16, 24
LEVELS = (0.0, 2.5, 3.7, 7.0)


def _realistic(seed: int = 0) -> HyperpriorModel:
    """Random weights, nudged so the scales span a good part of the table and gains/medians vary."""
    torch.manual_seed(seed)
    model = HyperpriorModel(N=N, M=M)
    with torch.no_grad():
        model.inv_hyper_gain.normal_(0, 0.3)
        model.entropy_bottleneck.quantiles.add_(torch.randn(N, 1, 1) * 0.3)
        last = model.h_s[-1]
        last.weight[:M] *= 3
        last.bias[:M] = 1.0 + torch.rand(M) * 3
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny GEMMs are fastest on one thread (and the thread test switches explicitly)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> HyperpriorModel:
    return _realistic()


@pytest.fixture(scope="module")
def exact(model) -> ExactEntropyParameters:
    return ExactEntropyParameters.from_model(model)


def _symbols(shape: tuple[int, ...], seed: int = 1, spread: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-spread, spread + 1, shape, generator=g)


def _float_path(model: HyperpriorModel, z: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What Codec._entropy_params computes today (float32)."""
    with torch.no_grad():
        z_hat = z.float() + model.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
        ihg = model.gains(torch.full((z.shape[0],), level))[3]
        scales, means = model.h_s(z_hat * ihg).chunk(2, 1)
        return model.gaussian_conditional.build_indexes(scales), means


@pytest.mark.parametrize("level", LEVELS)
def test_output_formats(exact, level):
    z = _symbols((2, N, 5, 6))
    idx, means = exact(z, level)
    assert idx.shape == means.shape == (2, M, 20, 24)
    assert idx.dtype == torch.int32 and means.dtype == torch.float32
    assert 0 <= int(idx.min()) and int(idx.max()) <= 63
    assert len(idx.unique()) >= 10  # the test model exercises many tables
    q = means.double() * 2**MEAN_FRAC_BITS
    assert torch.equal(q, q.round())  # dyadic: multiples of 2**-10
    assert float(means.abs().max()) <= MEAN_LIMIT


@pytest.mark.parametrize("level", LEVELS)
def test_matches_pure_integer_reference(exact, level):
    """The float64 GEMM path equals a tap-by-tap int64 evaluation: no rounding happened."""
    z = _symbols((1, N, 6, 5), seed=2)
    idx, means = exact(z, level)
    ridx, rmeans = exact.reference(z, level)
    assert torch.equal(idx, ridx) and torch.equal(means, rmeans)


@pytest.mark.parametrize("level", LEVELS)
def test_close_to_float_path(model, exact, level):
    z = _symbols((2, N, 8, 8), seed=3)
    idx, means = exact(z, level)
    fidx, fmeans = _float_path(model, z, level)
    agree = (idx == fidx).double().mean().item()
    assert agree >= 0.99, agree
    assert (idx - fidx).abs().max() <= 1  # a disagreement is a neighbouring table
    # Means: 2**-11 from the output rounding plus a little quantization noise.
    assert (means - fmeans).abs().max().item() < 2e-3


@pytest.mark.parametrize("level", (0.0, 3.7))
def test_indexes_are_exact_scales_against_table(model, exact, level):
    z = _symbols((1, N, 6, 6), seed=4)
    idx, _ = exact(z, level)
    scales = exact.scales(z, level)  # float64, exact
    assert torch.equal(idx, model.gaussian_conditional.build_indexes(scales))


def test_thread_count_does_not_matter(exact):
    z = _symbols((2, N, 9, 7), seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = exact(z, 3.3)
        torch.set_num_threads(2)
        two = exact(z, 3.3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_batch_equals_single(exact):
    z = _symbols((4, N, 6, 9), seed=6)
    idx, means = exact(z, 5.2)
    for i in range(z.shape[0]):
        i1, m1 = exact(z[i : i + 1], 5.2)
        assert torch.equal(i1, idx[i : i + 1]) and torch.equal(m1, means[i : i + 1])


def test_receptive_field(exact):
    """Changing one z position changes exactly the y rows/cols that z_rows_needed predicts."""
    assert exact.upsampling == 4
    h = w = 8
    z = _symbols((1, N, h, w), seed=7)
    acc = exact._accumulators(z, 2.0)
    for zr, zc in ((0, 0), (3, 5), (7, 2)):
        z2 = z.clone()
        z2[0, :, zr, zc] += 5
        diff = (exact._accumulators(z2, 2.0) != acc).any(dim=1)[0]
        rows = set(diff.any(dim=1).nonzero().flatten().tolist())
        cols = set(diff.any(dim=0).nonzero().flatten().tolist())
        want_rows = {y for y in range(4 * h) if exact.z_rows_needed(y)[0] <= zr <= exact.z_rows_needed(y)[1]}
        want_cols = {x for x in range(4 * w) if exact.z_rows_needed(x)[0] <= zc <= exact.z_rows_needed(x)[1]}
        assert rows == want_rows and cols == want_cols
    # The documented margin: y rows [4a, 4b) need z rows [a-1, b+2).
    for a in range(0, 5):
        for b in range(a + 1, 7):
            lo = exact.z_rows_needed(4 * a)[0]
            hi = exact.z_rows_needed(4 * b - 1)[1]
            assert (lo, hi + 1) == (a - 1, b + 2)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    y0=st.integers(0, 39), ylen=st.integers(1, 40), x0=st.integers(0, 35), xlen=st.integers(1, 36),
    level=st.sampled_from(LEVELS),
)
def test_crop_consistency(exact, y0, ylen, x0, xlen, level):
    """Any y block computed from its z window equals the same block of the whole-image result."""
    h, w = 10, 9
    z = _symbols((1, N, h, w), seed=8)
    y1, x1 = min(4 * h, y0 + ylen), min(4 * w, x0 + xlen)
    y0, x0 = min(y0, y1 - 1), min(x0, x1 - 1)
    full_idx, full_means = exact(z, level)
    r0, r1, ro = exact.z_window(y0, y1, h)
    c0, c1, co = exact.z_window(x0, x1, w)
    idx, means = exact(z[..., r0:r1, c0:c1], level)
    sl = (..., slice(ro, ro + y1 - y0), slice(co, co + x1 - x0))
    assert torch.equal(idx[sl], full_idx[..., y0:y1, x0:x1])
    assert torch.equal(means[sl], full_means[..., y0:y1, x0:x1])


def test_tiled_evaluation_reassembles_whole(exact):
    """Tiles of 8 y rows × 12 y cols with their z windows rebuild the whole output exactly."""
    h, w = 7, 9
    z = _symbols((1, N, h, w), seed=9)
    full_idx, full_means = exact(z, 1.5)
    idx = torch.full_like(full_idx, -1)
    means = torch.full_like(full_means, float("nan"))
    for y0 in range(0, 4 * h, 8):
        for x0 in range(0, 4 * w, 12):
            y1, x1 = min(4 * h, y0 + 8), min(4 * w, x0 + 12)
            r0, r1, ro = exact.z_window(y0, y1, h)
            c0, c1, co = exact.z_window(x0, x1, w)
            ti, tm = exact(z[..., r0:r1, c0:c1], 1.5)
            idx[..., y0:y1, x0:x1] = ti[..., ro : ro + y1 - y0, co : co + x1 - x0]
            means[..., y0:y1, x0:x1] = tm[..., ro : ro + y1 - y0, co : co + x1 - x0]
    assert torch.equal(idx, full_idx) and torch.equal(means, full_means)


def test_levels_and_inputs(exact):
    z = _symbols((1, N, 4, 4), seed=10)
    top = float(exact.levels - 1)
    lo, hi = exact(z, 0.0), exact(z, top)
    assert not all(torch.equal(a, b) for a, b in zip(lo, hi, strict=True))  # the levels differ at all
    assert all(torch.equal(a, b) for a, b in zip(exact(z, -3.0), lo, strict=True))  # clamped like the model
    assert all(torch.equal(a, b) for a, b in zip(exact(z, 99.0), hi, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(exact(z.double(), 0.0), lo, strict=True))  # float symbols
    assert all(torch.equal(a, b) for a, b in zip(exact(z.to(torch.int32), 0.0), lo, strict=True))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            exact(z, bad)
    with pytest.raises(ValueError):
        exact(z[:, :5], 0.0)
    with pytest.raises(ValueError):
        exact(z[0], 0.0)


def test_input_gains_are_reproducible_and_close(model, exact):
    """The decimal gains agree with a float64 evaluation to the last fixed-point unit."""
    for level in (0.0, 2.25, 6.9):
        g, mg, guard = exact._input_gain(level)
        f = exact.layers[0].f_in + guard
        lo = min(int(level), model.levels - 2)
        t = level - lo
        p = model.inv_hyper_gain.detach().double()
        ihg = torch.exp(p[lo] * (1 - t) + p[lo + 1] * t)
        assert (g.double() - ihg * 2.0**f).abs().max() <= 1
        med = model.entropy_bottleneck._get_medians().detach().reshape(-1).double()
        assert (mg.double() - med * ihg * 2.0**f).abs().max() <= 1


def test_hostile_symbols_saturate_without_overflow(exact):
    """Huge symbols (a hostile stream) give valid, reference-equal outputs: no int64 overflow."""
    z = _symbols((1, N, 4, 5), seed=11, spread=2**31 - 1)
    z[0, :, 0, 0] = -(2**40)
    idx, means = exact(z, 7.0)
    ridx, rmeans = exact.reference(z, 7.0)
    assert torch.equal(idx, ridx) and torch.equal(means, rmeans)
    assert 0 <= int(idx.min()) and int(idx.max()) <= 63
    assert torch.isfinite(means).all() and float(means.abs().max()) <= MEAN_LIMIT


def test_symbols_from_entropy_bottleneck(model, exact):
    """Symbols recovered from the EntropyBottleneck's z_hat are the coded ones."""
    torch.manual_seed(12)
    z = torch.randn(1, N, 3, 4) * 4
    eb = model.entropy_bottleneck
    with torch.no_grad():
        strings = eb.compress(z)
        z_hat = eb.decompress(strings, z.shape[-2:])
    symbols = symbols_from_z_hat(z_hat, eb._get_medians())
    assert symbols.dtype == torch.int64
    assert torch.equal(symbols, eb.quantize(z, "symbols", eb._get_medians()).long())
    idx, _ = exact(symbols, 4.0)
    assert idx.shape == (1, M, 12, 16)


def test_from_model_is_deterministic(model, exact):
    again = ExactEntropyParameters.from_model(model)
    for a, b in zip(exact.layers, again.layers, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and a.f_in == b.f_in
    fmt = exact.formats()
    for layer in fmt["layers"]:
        assert layer["bound_bits"] <= 53  # every partial sum is an integer below 2**53
        assert layer["input_range"] >= 2**12
        assert layer["input_frac_bits"] >= 8


def test_refuses_unbuilt_model():
    model = HyperpriorModel(N=N, M=M)
    with pytest.raises(ValueError, match="update"):
        ExactEntropyParameters.from_model(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(exact):
    z = _symbols((2, N, 6, 7), seed=13)
    cpu = exact(z, 3.0)
    gpu = exact(z.cuda(), 3.0)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


def test_bounds_are_exact_for_every_layer(exact):
    """L1 · clamp ≤ 2**53 for each layer (the exactness argument of the module docstring)."""
    for layer in exact.layers:
        per_output = layer.weight.abs().reshape(layer.out_channels, -1).sum(1)  # both layouts are O-major
        assert int(per_output.max()) == layer.l1_max
        assert layer.l1_max * layer.a_max <= 2**53
        assert int(layer.weight.abs().max()) <= 2**15 - 1
        assert math.log2(layer.a_max) - layer.f_in >= 12


def test_non_finite_float_symbols_are_refused(exact):
    z = _symbols((1, N, 3, 3), seed=14).double()
    z[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        exact(z, 1.0)
    z[0, 0, 0, 0] = 1e30  # huge but finite: saturates like a huge integer
    assert all(torch.equal(a, b) for a, b in zip(exact(z, 1.0), exact(z.clamp(-(2**20), 2**20).long(), 1.0),
                                                 strict=True))
