"""The variable-rate mean-scale hyperprior network.

Architecture: the mean-scale hyperprior of Minnen, Ballé and Toderici (NeurIPS 2018)
without the autoregressive context model, itself built on the scale hyperprior of
Ballé et al. (ICLR 2018), from CompressAI's layers (GDN, ``EntropyBottleneck``,
``GaussianConditional``). One set of weights covers the whole rate range through the
gain units of Cui et al., "Asymmetric Gained Deep Image Compression With Continuous
Rate Adaptation" (CVPR 2021): a learned per-channel gain on y and z for each of the
``levels`` rate points, and an inverse gain before synthesis. Between two trained
levels the (log-)gains are interpolated linearly, which gives a continuous rate knob.

.. code-block:: none

    x ─g_a─► y ·gain ─► y_g ─h_a─► z ·hgain ─► z_g ─Q─► z_hat ·ihgain ─h_s─► (scales, means)
                         │                        (EntropyBottleneck)              │
                         └──────────Q (GaussianConditional, centred on means) ◄────┘
                                    │
                               y_hat ·igain ─g_s─► x_hat

Symbols: ``y`` latents (M channels, 1/16 resolution), ``z`` hyper-latents (N channels,
1/64 resolution), ``*_hat`` their quantized values, ``likelihoods`` the probability
the priors give each quantized value (rate = -log2 likelihood).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._compressai import GDN, CompressionModel, EntropyBottleneck, GaussianConditional, conv, deconv

#: The rate-distortion trade-offs the levels are trained at, as λ in ``rate + λ·255²·MSE``:
#: CompressAI's ladder for its MSE models (quality 1..8, 0.0018 … 0.18) with one more rung
#: below it so that quality 0 reaches the lowest rates users ask for (0.15 bpp and below on
#: Kodak). That rung was 0.0009 (the ladder's ratio of about 1.9 continued) until step
#: 19,400 of the first model's run, where quality 0 still gave 0.166 bpp on Kodak; it is
#: now 0.0006.
LAMBDAS: tuple[float, ...] = (0.0006, 0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)

#: Parameters with one row per level (their first dimension is ``levels``).
LEVEL_PARAMS = ("gain", "inv_gain", "hyper_gain", "inv_hyper_gain")


def fast_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast speeds up the transforms on ``device``.

    On CUDA, and on CPUs with AVX-512 (oneDNN's bf16 kernels), it does: a training step of 8 crops of
    256×256 ran 2.6× faster than in float32 on a Zen 4 core pair. On an AVX2-only CPU (Zen 3) the same step
    took 28 s in bf16 against 3.5 s in float32, so there float32 is the fast path.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return device.type == "cuda"
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: fall back on the dispatch level
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def ladder(levels: int = len(LAMBDAS)) -> tuple[float, ...]:
    """The λ of each rung of a ladder of ``levels``: :data:`LAMBDAS`, cut from below or continued above.

    Fewer rungs drop the lowest (the first generation's eight levels were ``LAMBDAS[1:]``); more
    rungs continue above 0.18 at the ratio of the top two (about 1.93), for a finer quantizer at
    the top end than the 0.18 rung of CompressAI's ladder gives.
    """
    if levels < 2:
        msg = f"a ladder needs at least 2 levels, got {levels}"
        raise ValueError(msg)
    if levels <= len(LAMBDAS):
        return LAMBDAS[len(LAMBDAS) - levels:]
    ratio = LAMBDAS[-1] / LAMBDAS[-2]
    extra = tuple(round(LAMBDAS[-1] * ratio**k, 4) for k in range(1, levels - len(LAMBDAS) + 1))
    return LAMBDAS + extra


def lambda_at(level: Tensor, levels: int = len(LAMBDAS)) -> Tensor:
    """λ for a continuous level in ``[0, levels - 1]`` of :func:`ladder` (log-linear interpolation)."""
    log_l = torch.tensor([math.log(v) for v in ladder(levels)], device=level.device)
    return torch.exp(_interp(log_l, level))


def _interp(table: Tensor, level: Tensor) -> Tensor:
    """Linear interpolation of the rows of ``table`` (L×C or L) at continuous ``level`` (B)."""
    n = table.shape[0]
    level = level.to(table.dtype).clamp(0, n - 1)
    lo = level.floor().long().clamp(max=n - 2)
    t = (level - lo.to(level.dtype))
    if table.dim() == 2:
        t = t[:, None]
    return table[lo] * (1 - t) + table[lo + 1] * t


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class HyperpriorModel(CompressionModel):
    """Variable-rate mean-scale hyperprior (see the module docstring).

    Args:
        N: channels of the transforms and of z.
        M: channels of y.
        levels: number of trained rate points (gain vectors).
    """

    def __init__(self, N: int = 128, M: int = 192, levels: int = len(LAMBDAS)) -> None:
        super().__init__()
        self.N, self.M, self.levels = N, M, levels
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        # Log-gains. Higher λ wants a finer quantizer; start the ladder at a step ratio of
        # sqrt(λ_{i+1}/λ_i) per level (high-rate theory: D ∝ Δ²), centred on the middle level.
        lams = ladder(levels)
        ratio = 0.5 * math.log(lams[-1] / lams[0]) / (levels - 1)
        init = (torch.arange(levels, dtype=torch.float32) - (levels - 1) / 2) * ratio
        self.gain = nn.Parameter(init[:, None].repeat(1, M))
        self.inv_gain = nn.Parameter(-init[:, None].repeat(1, M))
        self.hyper_gain = nn.Parameter(torch.zeros(levels, N))
        self.inv_hyper_gain = nn.Parameter(torch.zeros(levels, N))

    @property
    def downsampling_factor(self) -> int:
        """Input height and width must be multiples of this."""
        return 64

    #: Pixels per y latent along each axis (the analysis' four stride-2 convolutions).
    latent_stride = 16

    #: Latents of real context each side of a tile (the transforms' reach, rounded up): tiles
    #: computed with this margin give the same output as one pass over the whole image.
    tile_margin = 3

    def quality_to_level(self, quality: float) -> float:
        """The user's quality 0..100 on this model's continuous level ladder 0..levels-1 (linear)."""
        return float(quality) / 100.0 * (self.levels - 1)

    def gains(self, level: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gain, inverse gain, hyper gain and inverse hyper gain at ``level`` (B), each B×C×1×1."""
        return tuple(  # type: ignore[return-value]
            torch.exp(_interp(p, level))[:, :, None, None]
            for p in (self.gain, self.inv_gain, self.hyper_gain, self.inv_hyper_gain)
        )

    def y_params(self, y: Tensor, scales: Tensor, means: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        """The scales and means the rate of gained latents ``y`` is taken with: the hyperprior's."""
        return scales, means

    def forward(self, x: Tensor, level: Tensor) -> dict[str, object]:
        """Training pass: additive noise for the rates, rounding (straight-through) for y_hat.

        Args:
            x: B×3×H×W in [0, 1].
            level: B continuous levels in [0, levels-1].
        """
        g, ig, hg, ihg = self.gains(level)
        y = self.g_a(x) * g
        z = self.h_a(y) * hg
        with torch.autocast(device_type=x.device.type, enabled=False):
            z_hat, z_lik = self.entropy_bottleneck(z.float())
        params = self.h_s(z_hat * ihg)
        scales, means = params.float().chunk(2, 1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            _, y_lik = self.gaussian_conditional(y.float(), scales, means=means)
        y_hat = ste_round(y.float() - means) + means
        x_hat = self.g_s(y_hat * ig)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}


def checkerboard_mask(h: int, w: int, *, anchors: bool, device: torch.device | None = None) -> Tensor:
    """1×1×h×w float mask of the anchor positions (``(row + col)`` even) or of the others."""
    r = torch.arange(h, device=device)[:, None]
    c = torch.arange(w, device=device)[None, :]
    m = ((r + c) % 2 == 0) if anchors else ((r + c) % 2 == 1)
    return m.to(torch.float32)[None, None]


class CheckerboardContext(nn.Conv2d):
    """A 5×5 convolution that reads only the taps of the other checkerboard colour.

    Applied to the decoded anchors (zero elsewhere), its output at a non-anchor position is
    a function of the four nearest anchors and the anchors around them, never of a
    non-anchor: He et al., "Checkerboard Context Model for Efficient Learned Image
    Compression" (CVPR 2021).
    """

    def __init__(self, channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__(channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = kernel_size
        mask = checkerboard_mask(k, k, anchors=False)  # taps at odd Manhattan distance from the centre
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class CheckerboardModel(HyperpriorModel):
    """The mean-scale hyperprior with a two-pass checkerboard context (second generation).

    The latents are split like a checkerboard. Anchors (``(row + col)`` even) are coded with
    the hyperprior's parameters exactly as in :class:`HyperpriorModel`. The other half is
    coded after them, with parameters corrected by what the decoded anchors around each
    position say::

        scales_na, means_na = (scales, means) + gain · E(scales·ig, means·ig, C(ŷ_a·ig, (ŷ_a − means)·ig))

    ``C`` is a :class:`CheckerboardContext`, ``E`` a stack of 1×1 convolutions (the entropy
    parameters network of Minnen et al. 2018), ``ig`` the level's inverse gain, so ``C`` and
    ``E`` see latents on one scale at every rate, and ``gain`` brings the correction back to
    the level's scale. The last convolution of ``E`` starts at zero: a model grown from
    hyperprior weights starts with exactly the hyperprior's function and rate.
    """

    def __init__(self, N: int = 128, M: int = 192, levels: int = len(LAMBDAS)) -> None:
        super().__init__(N, M, levels)
        self.context = CheckerboardContext(2 * M, M)  # reads the anchors and their residuals
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(3 * M, 2 * M, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(2 * M, 2 * M, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(2 * M, 2 * M, 1),
        )
        nn.init.zeros_(self.entropy_parameters[-1].weight)
        nn.init.zeros_(self.entropy_parameters[-1].bias)

    def hyper_params(self, y: Tensor, level: Tensor, *, noise: bool) -> tuple[Tensor, Tensor, Tensor]:
        """z likelihoods, scales and means of the hyperprior for gained latents ``y``."""
        hg, ihg = self.gains(level)[2:]
        z = self.h_a(y) * hg
        with torch.autocast(device_type=y.device.type, enabled=False):
            if noise:
                z_hat, z_lik = self.entropy_bottleneck(z.float())
            else:
                z_hat, z_lik = self.entropy_bottleneck(z.float(), training=False)
        scales, means = self.h_s(z_hat * ihg).float().chunk(2, 1)
        return z_lik, scales, means

    def coded_params(self, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
        """The scales and means the coder uses: each scale raised to its entry of the scale table,
        each mean rounded to a multiple of 2**-10 (as :mod:`vaecodec.exact` computes them).

        Straight-through: the gradient passes as if nothing were rounded, except below the
        scale bound. There the coder uses the table's first entry whatever the scale is, so a
        push to lower the scale further is dropped, as the hyperprior's own lower bound does;
        without that, training drives those scales (most of them at low rates) without limit.
        """
        table = self.gaussian_conditional.scale_table
        if table.numel() < 2:
            from ._compressai import get_scale_table

            table = get_scale_table()
        table = table.to(scales.device, torch.float32)
        bound = float(self.gaussian_conditional.lower_bound_scale.bound)
        idx = torch.bucketize(scales.detach().float().clamp_min(bound).contiguous(), table[:-1])
        s_q = table[idx]
        m_q = torch.round(means.detach().float() * 1024) / 1024
        scales = self.gaussian_conditional.lower_bound_scale(scales)
        return scales + (s_q - scales).detach(), means + (m_q - means).detach()

    def context_params(
        self, y_hat_anchors: Tensor, scales: Tensor, means: Tensor, level: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Scales and means for the non-anchors, from the hyperprior's and the decoded anchors.

        The context reads each anchor's value and its residual ``ŷ − mean`` (both divided by
        the gain); anchors are the positions with ``(row + col)`` even in these tensors.
        """
        g, ig = self.gains(level)[:2]
        anchor = checkerboard_mask(*y_hat_anchors.shape[-2:], anchors=True, device=y_hat_anchors.device)
        ctx = self.context(torch.cat([y_hat_anchors, (y_hat_anchors - means) * anchor], 1) * torch.cat([ig, ig], 1))
        d = self.entropy_parameters(torch.cat([scales * ig, means * ig, ctx], 1)).float()
        ds, dm = (d * torch.cat([g, g], 1)).chunk(2, 1)
        return scales + ds, means + dm

    def latent_params(self, y: Tensor, scales: Tensor, means: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        """Scales and means of every y position (anchors: hyperprior; others: with context).

        The anchors are quantized as the codec does (rounded around the hyperprior's means).
        """
        h, w = y.shape[-2:]
        anchor = checkerboard_mask(h, w, anchors=True, device=y.device)
        y_hat = (torch.round(y - means) + means) * anchor
        s_na, m_na = self.context_params(y_hat.detach(), scales, means, level)
        return scales * anchor + s_na * (1 - anchor), means * anchor + m_na * (1 - anchor)

    def y_params(self, y: Tensor, scales: Tensor, means: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        """The coder's scales and means of every position: :meth:`coded_params`, then the context."""
        return self.latent_params(y, *self.coded_params(scales, means), level)

    def forward(self, x: Tensor, level: Tensor) -> dict[str, object]:
        """Training pass, as :meth:`HyperpriorModel.forward` with the context's parameters."""
        g, ig = self.gains(level)[:2]
        y = self.g_a(x) * g
        z_lik, scales, means = self.hyper_params(y, level, noise=True)
        scales, means = self.y_params(y.float(), scales, means, level)
        with torch.autocast(device_type=x.device.type, enabled=False):
            _, y_lik = self.gaussian_conditional(y.float(), scales, means=means)
        y_hat = ste_round(y.float() - means) + means
        x_hat = self.g_s(y_hat * ig)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}


class SynthesisResidual(nn.Module):
    """``x + conv(LeakyReLU(conv(x)))``, two 3×3 convolutions; the second starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return x + self.conv2(nn.functional.leaky_relu(self.conv1(x)))


class ResidualSynthesisModel(CheckerboardModel):
    """:class:`CheckerboardModel` with a deeper synthesis: a :class:`SynthesisResidual` after the
    first and after the second upsampling stage (1/8 and 1/4 resolution).

    Grown from a checkerboard model by :func:`grow_residual_synthesis` (the blocks start as
    the identity, so the grown model decodes exactly as its parent); only the synthesis
    changes, so the rate at each quality is the parent's.
    """

    #: The blocks widen the synthesis' reach from 1 latent before / 2 after a decoded
    #: position to 3 before / 4 after (measured by the gradient; tests/test_residual_synthesis.py).
    tile_margin = 4

    def __init__(self, N: int = 128, M: int = 192, levels: int = len(LAMBDAS)) -> None:
        super().__init__(N, M, levels)
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), SynthesisResidual(N),
            deconv(N, N), GDN(N, inverse=True), SynthesisResidual(N),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, 3),
        )


#: Where each layer of the plain synthesis sits in :class:`ResidualSynthesisModel`'s.
_RESIDUAL_SYNTHESIS_INDEX = {0: 0, 1: 1, 2: 3, 3: 4, 4: 6, 5: 7, 6: 8}


def grow_residual_synthesis(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkerboard model's state renamed for :class:`ResidualSynthesisModel` (blocks not included)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "g_s":
            parts[1] = str(_RESIDUAL_SYNTHESIS_INDEX[int(parts[1])])
        out[".".join(parts)] = v
    return out


#: Architecture names (the manifest's and the weights files' ``arch``) and their classes.
ARCHITECTURES: dict[str, type[HyperpriorModel]] = {
    "mean-scale-hyperprior-gain": HyperpriorModel,
    "checkerboard-mean-scale-hyperprior-gain": CheckerboardModel,
    "checkerboard-mean-scale-hyperprior-gain-residual-synthesis": ResidualSynthesisModel,
}


def arch_of(model: HyperpriorModel) -> str:
    """The architecture name of ``model``."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    msg = f"unknown architecture {type(model).__name__}"
    raise ValueError(msg)


def build_model(arch: str, N: int, M: int, levels: int) -> HyperpriorModel:
    """An untrained model of architecture ``arch`` (see :data:`ARCHITECTURES`)."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        msg = f"unknown architecture {arch!r} (this vaecodec has: {', '.join(ARCHITECTURES)})"
        raise ValueError(msg) from None
    return cls(N, M, levels)
