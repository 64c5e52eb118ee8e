"""Checkpoint surgery: growing a trained model's state while keeping its function.

Used by training (``vaecodec train --init ... --channels ...``) and never by the codec:
new rate levels, wider latents, wider transforms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._compressai import GDN
from ..model import LAMBDAS, LEVEL_PARAMS

# the new y channels' analysis weights, relative to the old ones' spread (widen_latents)
ACTIVE_SPREAD = 0.15


def grow_levels(state: dict[str, Tensor], levels: int, *, moments: bool = False) -> dict[str, Tensor]:
    """Grow the per-level rows of ``state`` (weights trained with fewer levels) to ``levels``.

    The ladder grows as :func:`~vaecodec.model.ladder` does: below level 0 up to
    ``len(LAMBDAS)`` rungs, above the top beyond that. New rows extrapolate the log-gains
    linearly (the next lower λ wants a coarser quantizer, the next higher a finer one);
    training then refines them. With ``moments`` (an optimizer's running averages for those
    rows) the new rows copy their neighbour instead.
    """
    out = dict(state)
    for name in LEVEL_PARAMS:
        t = out.get(name)
        if t is None or t.dim() != 2 or t.shape[0] >= levels:
            continue
        while t.shape[0] < levels:
            if t.shape[0] < len(LAMBDAS):
                row = t[:1] if moments or t.shape[0] < 2 else 2 * t[:1] - t[1:2]
                t = torch.cat([row, t])
            else:
                row = t[-1:] if moments else 2 * t[-1:] - t[-2:-1]
                t = torch.cat([t, row])
        out[name] = t
    return out


def _grow(t: Tensor, dim: int, n: int, scale: float, gen: torch.Generator) -> Tensor:
    """``t`` grown to ``n`` along ``dim``: zeros, or random at ``scale`` times ``t``'s spread."""
    shape = list(t.shape)
    shape[dim] = n - shape[dim]
    if not scale:
        return torch.cat([t, torch.zeros(shape, dtype=t.dtype)], dim)
    extra = torch.randn(shape, generator=gen) * (float(t.float().std()) * scale)
    return torch.cat([t, extra.to(t.dtype)], dim)


def _old_width(state: dict[str, Tensor], key: str, n: int, what: str) -> int:
    """The width of ``state`` that ``key``'s first dimension gives; an error if ``n`` is narrower."""
    old = state[key].shape[0]
    if n < old:
        msg = f"cannot narrow {what} from {old} to {n} channels"
        raise ValueError(msg)
    return old


def widen_latents(
    state: dict[str, Tensor], M: int, *, spread: float = ACTIVE_SPREAD, seed: int = 0
) -> dict[str, Tensor]:
    """Grow y of ``state`` (a :class:`HyperpriorModel` state dict) to ``M`` channels, same image.

    Widening in the manner of Net2Net (Chen, Goodfellow and Shlens, ICLR 2016), adapted to a
    quantized bottleneck. A new y channel is computed by random weights at ``spread`` times
    the spread of the old ones, so at the top levels it rounds to nonzero symbols, and it is
    read by zero weights in the synthesis and the hyper-analysis: the decoded image and z
    stay the same, the old channels keep their priors, and the new channels cost bits from
    the first step. Their prior copies the scale network of an old channel (one of the
    widest quarter, chosen at random, so it follows the level as that channel's does) with
    zero mean; their gains start at the mean of the old ones.

    The other way round, new channels that round to 0 read by random synthesis weights, the
    new channels never open: the straight-through rounding feeds the synthesis zeros, so the
    weights that read them get no gradient, and the rate holds the channels under the rounding
    threshold (measured in docs/training-notes.md: after 4,550 steps no new symbol was nonzero).

    The hyper-synthesis' hidden widths (``M`` and ``3M/2``) grow too: new units silent, read
    by random weights, or active and read by zeros. A checkerboard model's context grows with
    them (:func:`_widen_context`).
    """
    old = _old_width(state, "g_a.6.weight", M, "y")
    if M == old:
        return dict(state)
    gen, out = torch.Generator().manual_seed(seed), dict(state)

    def grow(t: Tensor, dim: int, n: int, scale: float = 0.0) -> Tensor:
        return _grow(t, dim, n, scale, gen)

    h_new = M * 3 // 2
    # conv N -> M: new outputs random, active at the top levels
    out["g_a.6.weight"] = grow(out["g_a.6.weight"], 0, M, spread)
    out["g_a.6.bias"] = grow(out["g_a.6.bias"], 0, M)
    for name in ("gain", "inv_gain"):
        t = out[name]
        out[name] = torch.cat([t, t.mean(1, keepdim=True).expand(-1, M - old)], 1)
    out["h_a.0.weight"] = grow(out["h_a.0.weight"], 1, M)  # conv M -> N: new inputs read by zeros
    out["g_s.0.weight"] = grow(out["g_s.0.weight"], 0, M)  # deconv M -> N: likewise
    # h_s: deconv N -> M (new hidden units silent), deconv M -> 3M/2 (new rows random: they read
    # silent units; new columns random: read by zeros below), conv 3M/2 -> 2M (scales | means)
    out["h_s.0.weight"] = grow(out["h_s.0.weight"], 1, M)
    out["h_s.0.bias"] = grow(out["h_s.0.bias"], 0, M)
    out["h_s.2.weight"] = grow(grow(out["h_s.2.weight"], 0, M, 1.0), 1, h_new, 1.0)
    out["h_s.2.bias"] = grow(out["h_s.2.bias"], 0, h_new)
    w, b = grow(out["h_s.4.weight"], 1, h_new), out["h_s.4.bias"]
    (ws, wm), (bs, bm) = w.chunk(2, 0), b.chunk(2, 0)
    # the old channel each new scale copies: one of the widest quarter (by scale bias)
    wide = bs.argsort(descending=True)[: max(1, old // 4)]
    pick = wide[torch.randint(0, len(wide), (M - old,), generator=gen)]
    out["h_s.4.weight"] = torch.cat([ws, ws[pick], grow(wm, 0, M)])
    out["h_s.4.bias"] = torch.cat([bs, bs[pick], grow(bm, 0, M)])
    if "context.weight" in out:
        _widen_context(out, old, M, grow)
    return out


def _widen_context(out: dict[str, Tensor], old: int, M: int, grow: Callable[..., Tensor]) -> None:
    """The checkerboard context and entropy-parameters network of ``out`` grown from ``old`` to ``M``.

    Every input block (the anchors and their residuals of the context; the scales, means and
    context features of the entropy parameters) gains columns of zeros: the new channels are
    not read yet. New context features and new hidden units are computed by random weights
    and read by zeros; the new channels' corrections (rows of the last layer) start at zero,
    so every old channel keeps its parameters and the new ones keep the hyperprior's.
    """
    def blocks(t: Tensor, n: int) -> Tensor:  # each of the n input blocks of width old grown to M
        return torch.cat([grow(part, 1, M) for part in t.chunk(n, 1)], 1)

    out["context.weight"] = grow(blocks(out["context.weight"], 2), 0, M, 1.0)
    out["context.bias"] = grow(out["context.bias"], 0, M)
    hidden = 2 * M
    out["entropy_parameters.0.weight"] = grow(blocks(out["entropy_parameters.0.weight"], 3), 0, hidden, 1.0)
    out["entropy_parameters.0.bias"] = grow(out["entropy_parameters.0.bias"], 0, hidden)
    out["entropy_parameters.2.weight"] = grow(grow(out["entropy_parameters.2.weight"], 1, hidden), 0, hidden, 1.0)
    out["entropy_parameters.2.bias"] = grow(out["entropy_parameters.2.bias"], 0, hidden)
    w, b = grow(out["entropy_parameters.4.weight"], 1, hidden), out["entropy_parameters.4.bias"]
    out["entropy_parameters.4.weight"] = torch.cat([grow(half, 0, M) for half in w.chunk(2, 0)])
    out["entropy_parameters.4.bias"] = torch.cat([grow(half, 0, M) for half in b.chunk(2, 0)])


# the split copies' incoming weights get noise at this share of the layer's weight spread (widen_transforms)
SPLIT_NOISE = 0.3


def _split_units(out: dict[str, Tensor], old: int, N: int, gen: torch.Generator, noise: float) -> None:
    """Make the new hidden units of g_a and g_s copies of old ones (Net2Net), the function kept.

    Each new unit copies the incoming weights, bias and GDN row of one of the most-read old
    units (its normalisation sees the old units only, so it computes the same value), and the
    next layer reads the copies and their source with the source's weights divided among them.
    The copies' incoming weights get noise so that twins can grow apart (with Adam, twins that
    start alike get alike steps and stay twins), and their source the opposite noise, which
    keeps the mean of their weights and so most of the function.
    """
    # (producer, its output dimension, GDN, reader, the reader's input dimension); Conv2d weights are
    # out×in, ConvTranspose2d weights in×out
    layers = [("g_a.0", 0, "g_a.1", "g_a.2", 1), ("g_a.2", 0, "g_a.3", "g_a.4", 1), ("g_a.4", 0, "g_a.5", "g_a.6", 1),
              ("g_s.0", 1, "g_s.1", "g_s.2", 0), ("g_s.2", 1, "g_s.3", "g_s.4", 0), ("g_s.4", 1, "g_s.5", "g_s.6", 0)]
    zero = GDN(2).state_dict()["gamma"][0, 1]  # the stored form of a gamma entry of 0
    sources = {}
    for prod, pdim, gdn, reader, rdim in layers:
        r = out[f"{reader}.weight"].narrow(rdim, 0, old).float()
        read = r.transpose(0, rdim).reshape(old, -1).norm(dim=1)
        src = read.argsort(descending=True).repeat(-(-(N - old) // old))[: N - old]
        sources[reader] = (src, rdim)
        w = out[f"{prod}.weight"]
        copy = w.index_select(pdim, src).float()
        eps = torch.randn(copy.shape, generator=gen) * (float(w.narrow(pdim, 0, old).float().std()) * noise)
        copy += eps
        idx = [slice(None)] * w.dim()
        idx[pdim] = slice(old, N)
        w[tuple(idx)] = copy.to(w.dtype)
        # antithetic: each source moves by minus its copies' noise, so the mean of a source and its
        # copies keeps the old weights and the output changes far less than the noise alone would
        src_w = w.narrow(pdim, 0, old).float().index_add(pdim, src, -eps)
        w.narrow(pdim, 0, old).copy_(src_w.to(w.dtype))
        out[f"{prod}.bias"][old:] = out[f"{prod}.bias"][src]
        out[f"{gdn}.beta"][old:] = out[f"{gdn}.beta"][src]
        gamma = out[f"{gdn}.gamma"]
        gamma[old:, :old] = gamma[src, :old]
        gamma[old:, old:] = zero.to(gamma.dtype)
    for reader, (src, rdim) in sources.items():
        w = out[f"{reader}.weight"]
        share = 1.0 + torch.bincount(src, minlength=old).to(w.dtype)  # the source and its copies
        shape = [1] * w.dim()
        shape[rdim] = old
        base = w.narrow(rdim, 0, old) / share.view(shape)
        w.narrow(rdim, 0, old).copy_(base)
        w.narrow(rdim, old, N - old).copy_(base.index_select(rdim, src))


def widen_transforms(
    state: dict[str, Tensor], N: int, *, seed: int = 0, split: float | None = None
) -> dict[str, Tensor]:
    """Grow the width ``N`` of ``state``'s transforms (and of z) to ``N`` channels, same function.

    The companion of :func:`widen_latents`, for the hidden layers: each new unit of g_a, g_s,
    h_a and h_s computes something (random incoming weights at the old weights' spread) and
    is read by zero weights, so it can learn without changing the output; a GDN leaves the
    old units' normalisation alone (new cross terms of gamma are 0). New z channels are
    computed by tiny weights, so they quantize to 0, and are read by small random weights
    in h_s. Their factorized prior is a copy of the most concentrated old channel's, shifted
    to have its median at 0 (they cost almost nothing until they carry something). The
    entropy coder's tables are dropped: ``update()`` rebuilds them.

    With ``split`` (the noise on the copies' incoming weights, as a share of the layer's
    weight spread; :data:`SPLIT_NOISE` by default in training), the new units of g_a and g_s
    are instead copies of the most-read old units, which share their readers' weights with
    them (:func:`_split_units`): new units
    read by zeros get a gradient that is mostly noise, and in a measured run their readers
    had grown to 6 % of the old units' weights after 3,300 steps.
    """
    old = _old_width(state, "g_a.0.weight", N, "the transforms")
    if N == old:
        return dict(state)
    gen, out = torch.Generator().manual_seed(seed), dict(state)

    def grow(name: str, dim: int, scale: float = 0.0) -> None:
        out[name] = _grow(out[name], dim, N, scale, gen)

    def gdn(p: str) -> None:  # a fresh GDN's parameters (no cross terms), the old block kept
        fresh = GDN(N).state_dict()
        for name in ("beta", "gamma"):
            t = fresh[name].to(out[f"{p}.{name}"].dtype)
            t[(slice(0, old),) * t.dim()] = out[f"{p}.{name}"]
            out[f"{p}.{name}"] = t

    # analysis: conv(3,N) GDN conv(N,N) GDN conv(N,N) GDN conv(N,M); Conv2d weights are out×in
    grow("g_a.0.weight", 0, 1.0), grow("g_a.0.bias", 0)
    for i in (2, 4):
        grow(f"g_a.{i}.weight", 0, 1.0), grow(f"g_a.{i}.weight", 1), grow(f"g_a.{i}.bias", 0)
    grow("g_a.6.weight", 1)
    # synthesis: ConvTranspose2d weights are in×out
    grow("g_s.0.weight", 1, 1.0), grow("g_s.0.bias", 0)
    for i in (2, 4):
        grow(f"g_s.{i}.weight", 1, 1.0), grow(f"g_s.{i}.weight", 0), grow(f"g_s.{i}.bias", 0)
    grow("g_s.6.weight", 0)
    for p in ("g_a.1", "g_a.3", "g_a.5", "g_s.1", "g_s.3", "g_s.5"):
        gdn(p)
    if split is not None:
        _split_units(out, old, N, gen, split)
    # hyper-analysis conv(M,N) conv(N,N) conv(N,N) -> z; the last one's new outputs are tiny
    grow("h_a.0.weight", 0, 1.0), grow("h_a.0.bias", 0)
    grow("h_a.2.weight", 0, 1.0), grow("h_a.2.weight", 1), grow("h_a.2.bias", 0)
    grow("h_a.4.weight", 0, 0.01), grow("h_a.4.weight", 1), grow("h_a.4.bias", 0)
    grow("h_s.0.weight", 0, 0.1)  # deconv N -> M reads the new z channels (0 for now)
    for name in ("hyper_gain", "inv_hyper_gain"):
        t = out[name]
        out[name] = torch.cat([t, t.mean(1, keepdim=True).expand(-1, N - old)], 1)
    # factorized prior of the new z channels: the most concentrated old channel, median moved to 0
    q = out["entropy_bottleneck.quantiles"]
    src = int((q[:, 0, 2] - q[:, 0, 0]).argmin())
    median = q[src, 0, 1]
    eb = "entropy_bottleneck."
    density = [k for k in out if k.startswith((eb + "matrices.", eb + "biases.", eb + "factors."))]
    for name in density:
        row = out[name][src:src + 1].clone()
        if name == eb + "biases.0":  # the first layer is softplus(matrix) @ z + bias: z -> z + median
            slope = torch.nn.functional.softplus(out[eb + "matrices.0"][src:src + 1].float())
            row = row + (slope * median).to(row.dtype)
        out[name] = torch.cat([out[name], row.expand(N - old, *row.shape[1:])])
    out[eb + "quantiles"] = torch.cat([q, (q[src:src + 1] - median).expand(N - old, -1, -1)])
    for name in ("_offset", "_quantized_cdf", "_cdf_length"):
        if eb + name in out:
            out[eb + name] = out[eb + name].new_zeros(0)
    return out
