"""Exact (integer) entropy parameters: the hyper-synthesis evaluated bit-identically anywhere.

The decoder chooses the probability table of every y latent from the hyper-synthesis output
``scales, means = h_s(z_hat · inv_hyper_gain)``: a table index (the first entry of the
64-entry ``scale_table`` that is not below the scale) and a mean that centres the quantizer.
Encoder and decoder must derive the same tables bit for bit, and float32 evaluation does not
promise that across machines, BLAS libraries, thread counts, batch sizes, tilings or devices:
a single index that flips desynchronizes the rANS decoder and the rest of the image decodes
to garbage. :class:`ExactEntropyParameters` removes that risk.

Method. This is the idea of Ballé, Johnston and Minnen, "Integer networks for data
compression with latent-variable models" (ICLR 2019): make the network that computes the
entropy model's parameters an integer network, so that it is a deterministic function of the
decoded symbols. (US patent 11869221 describes integer networks for this purpose.) We get
there by post-training quantization of the trained float ``h_s``, once, when the class is
built (:meth:`ExactEntropyParameters.from_model`, a few milliseconds):

* Each convolution's weights are rounded to signed integers of :data:`WEIGHT_BITS` bits,
  ``|w| ≤ 2**15 - 1``, with one power-of-two scale ``2**-e_o`` per output channel (the
  largest that fits the channel's largest weight). Biases are rounded to integers at the
  scale of their accumulator, ``2**-(e_o + f_in)``.
* Activations are fixed-point integers with ``f`` fractional bits, chosen per layer from the
  exactness budget below, and saturate at ``±A`` (``A / 2**f ≥ 2**RANGE_BITS``, i.e. ±4096
  or more in real units, far above anything a trained model produces). A layer's accumulator
  is brought to the next layer's format with a per-channel arithmetic right shift with
  round-half-up (``(acc + 2**(sh-1)) >> sh``); LeakyReLU with its slope ``p/q`` (1/100) is the
  integer ``a ≥ 0 ? a : floor((2·a·p + q) / (2·q))``.
* The input folds the EntropyBottleneck medians and the level's inverse hyper gain into one
  per-channel integer affine map of the z symbols: ``x = (s·G_c + MG_c) >> guard`` with
  ``G_c ≈ ihg_c · 2**(f + guard)`` and ``MG_c ≈ median_c · ihg_c · 2**(f + guard)``. The
  gains ``ihg = exp(interpolated log-gain)`` are computed with Python's :mod:`decimal`
  (a software implementation with correctly rounded ``exp``), not with a platform ``libm``,
  so even the gains are the same on every machine.
* Exactness: the convolutions (``unfold`` + matmul) and transposed convolutions (matmul +
  ``fold``) run in float64 on integer values. Every product and every partial sum, in any
  summation order, is bounded by ``L1_o · A`` where ``L1_o`` is the sum of the absolute
  integer weights of output channel ``o``; ``A`` is chosen as ``floor(2**53 / max_o L1_o)``,
  so all of them are integers below ``2**53``, which float64 represents exactly. Hence the
  result does not depend on the GEMM's blocking, threading, vectorization, fused
  multiply-adds or device: no rounding ever happens. Biases, shifts, clamps and the
  LeakyReLU run in int64. There are no FFT or Winograd convolutions in the path.
* Outputs: the scale accumulator ``acc`` (scale ``2**-k_o``) is compared with the integer
  thresholds ``floor(t_i · 2**k_o)``, which is exactly ``scale > t_i`` for the float32 table
  entries ``t_i`` (the lower bound of :class:`GaussianConditional` included), so ``indexes``
  equal what comparing the exact scales with ``scale_table`` gives. Means are rounded to
  multiples of ``2**-MEAN_FRAC_BITS`` (1/1024) and saturate at ``±2**(23 - MEAN_FRAC_BITS)``,
  so they are exact float32 values and ``symbols + means`` is exact in float32 for
  ``|y_hat| < 2**14``.

Cost. For the N=128, M=192 model the activation formats come out at 15–16 fractional
bits (saturating at about ±5600…8000), weights keep 15–16 significant bits per channel.
The scales differ from float32 by ~1e-4, which puts about 1 latent in 10⁴ into the
neighbouring table; the means move by at most ~2**-11 + 2e-4. ``benchmarks/exact_cost.py``
measures the effect with the real coder: on six Kodak images at four levels the file sizes
changed by +0.004 % on average (estimated y bits −0.0003 %), PSNR by ±0.001 dB. The exact
path costs about 3× the float32 hyper-synthesis (0.15 s instead of 0.05 s for a 768×512
image on one core), most of it the float64 GEMM of the last 3×3 convolution.

Devices. CPU and CUDA run the same code (CUDA untested so far: no GPU here). GPU float64
GEMMs are built from IEEE multiply-adds and therefore exact under the same bound; cuBLAS's
opt-in emulation of FP64 on integer tensor cores must stay off. Devices without float64
(MPS) are evaluated on the CPU. :meth:`ExactEntropyParameters.reference` recomputes
everything in pure int64 arithmetic, tap by tap, as a check of the float64 path.

Receptive field (for tiled decoding). ``h_s`` upsamples by 4 (two stride-2 transposed 5×5
convolutions, then a 3×3 convolution). The y row ``Y`` depends on z rows
``Y//4 - 1 … Y//4 + 1`` when ``Y % 4 == 0`` and ``Y//4 - 1 … Y//4 + 2`` otherwise (the same
holds for columns): at most 4×4 z positions per y position. So the y rows ``[4a, 4b)`` are
computed exactly from the z rows ``[a - 1, b + 2)`` (clipped to the image: the image border
is zero padding in both cases); running on a crop of z gives the matching crop of the
outputs, bit for bit, away from the crop's borders. :data:`Z_MARGIN` and
:meth:`ExactEntropyParameters.z_window` give these numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Signed weight width: integer weights satisfy ``|w| ≤ 2**(WEIGHT_BITS-1) - 1``.
WEIGHT_BITS = 16
#: Activations saturate no earlier than ``±2**RANGE_BITS`` in real units.
RANGE_BITS = 12
#: Fewest fractional bits an activation format may have before the model is refused.
MIN_FRAC_BITS = 8
#: Means are multiples of ``2**-MEAN_FRAC_BITS``.
MEAN_FRAC_BITS = 10
#: Means saturate at ``±MEAN_LIMIT`` (real units); ``MEAN_LIMIT · 2**MEAN_FRAC_BITS < 2**24``.
MEAN_LIMIT = 2 ** (23 - MEAN_FRAC_BITS)
#: z symbols are clamped to ``±SYMBOL_LIMIT`` (a trained model's are below 100; beyond the
#: activation range the input saturates anyway).
SYMBOL_LIMIT = 2**16
#: Integers up to this magnitude are exact in float64.
FLOAT64_EXACT = 2**53
#: Extra fractional bits of the input gain before the input's rounding shift.
INPUT_GUARD_BITS = 16
#: z rows (and columns) needed before and after a block of y rows: y rows ``[4a, 4b)`` need
#: z rows ``[a - Z_MARGIN[0], b + Z_MARGIN[1])``.
Z_MARGIN = (1, 2)

_DECIMAL = Context(prec=60, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class _Layer:
    """One quantized (transposed) convolution and the activation format of its input."""

    transposed: bool
    kernel: int
    stride: int
    padding: int
    output_padding: int
    in_channels: int
    out_channels: int
    weight: Tensor  # int64; conv: O×(C·k·k), transposed: (O·k·k)×C (matmul layouts)
    bias: Tensor  # int64 (O,), at the accumulator scale 2**-(exp + f_in)
    exp: Tensor  # int64 (O,): weight scale 2**-exp per output channel
    f_in: int  # fractional bits of the input activations
    a_max: int  # input activations are clamped to ±a_max
    l1_max: int  # largest sum of |integer weights| over one output channel
    slope: tuple[int, int] | None  # (p, q) of the LeakyReLU that follows, None for the last layer


def _decimal_log_gains(log_table: list[list[float]], level: float) -> list[Decimal]:
    """The per-channel log-gains of ``log_table`` (one row per level) interpolated at ``level``
    (clamped to the ladder), in :mod:`decimal` (call inside ``localcontext(_DECIMAL)``)."""
    n = len(log_table)
    lev = min(max(Decimal(level), Decimal(0)), Decimal(n - 1))
    if n == 1:
        return [Decimal(v) for v in log_table[0]]
    lo = min(int(lev), n - 2)
    t = lev - lo
    return [Decimal(a) * (1 - t) + Decimal(b) * t for a, b in zip(log_table[lo], log_table[lo + 1], strict=True)]


def _to_int(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_HALF_EVEN, context=_DECIMAL))


def _channel_exponents(w: Tensor, dim: int, bits: int) -> Tensor:
    """Largest ``e`` per channel (``dim``) with ``max|w|·2**e ≤ 2**(bits-1) - 1``."""
    limit = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=[d for d in range(w.dim()) if d != dim]).tolist()
    exps: list[int | None] = []
    for m in amax:
        if m == 0 or not math.isfinite(m):
            if not math.isfinite(m):
                msg = "h_s has non-finite weights"
                raise ValueError(msg)
            exps.append(None)
            continue
        e = bits - 1 - math.frexp(m)[1]
        while m * 2.0**e > limit:  # exact: scaling by a power of two
            e -= 1
        exps.append(e)
    fill = max((e for e in exps if e is not None), default=0)
    return torch.tensor([fill if e is None else e for e in exps], dtype=torch.int64)


def _leaky_slope(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.ReLU):
        return (0, 1)
    slope = float(module.negative_slope)  # type: ignore[attr-defined]
    frac = Fraction(slope).limit_denominator(1 << 16)
    if abs(float(frac) - slope) > 1e-6 or frac < 0:
        msg = f"LeakyReLU slope {slope} has no small rational form"
        raise ValueError(msg)
    return (frac.numerator, frac.denominator)


class ExactEntropyParameters:
    """The hyper-synthesis as an exactly evaluated integer network (see the module docstring).

    Build it with :meth:`from_model`; call it with the decoded z symbols and the level::

        exact = ExactEntropyParameters.from_model(model)       # model.update() done
        indexes, means = exact(z_symbols, level)               # int32 / float32, B×M×h×w

    The result is bit-identical for any device, thread count, batch composition and (away
    from a crop's borders, see :meth:`z_window`) any spatial tiling.
    """

    def __init__(
        self, layers: list[_Layer], *, medians: list[float], log_inv_hyper_gain: list[list[float]],
        scale_table: list[float], scale_bound: float, mean_shift: Tensor,
    ) -> None:
        self.layers = layers
        self.N = layers[0].in_channels
        self.M = layers[-1].out_channels // 2
        self._medians = medians
        self._log_ihg = log_inv_hyper_gain
        self.levels = len(log_inv_hyper_gain)
        last = layers[-1]
        k = (last.exp[: self.M] + last.f_in).tolist()
        # Scale > t  <=>  acc > t·2**k  <=>  acc > floor(t·2**k)  (acc is an integer; t·2**k exact).
        cap = 2**62
        self._thresholds = torch.tensor(
            [[max(-cap, min(cap, math.floor(t * 2.0**kk))) for t in scale_table[:-1]] for kk in k],
            dtype=torch.int64,
        )
        # GaussianConditional.build_indexes lower-bounds the scales first: index >= index(bound).
        self._min_index = sum(1 for t in scale_table[:-1] if t < scale_bound)
        self._scale_exp = torch.tensor(k, dtype=torch.int64)
        self._mean_shift = mean_shift
        self._gain_cache: dict[float, tuple[Tensor, Tensor, int]] = {}
        self._device_cache: dict[torch.device, dict[str, object]] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model(cls, model: nn.Module) -> ExactEntropyParameters:
        """Quantize ``model.h_s`` (a :class:`~vaecodec.model.HyperpriorModel` whose entropy
        models are ``update()``d). Deterministic: a function of the weights only."""
        gc = model.gaussian_conditional
        if gc.scale_table is None or gc.scale_table.numel() < 2:
            msg = "the model's scale table is not built; call model.update(force=True) first"
            raise ValueError(msg)
        mods = list(model.h_s)
        convs: list[tuple[nn.Module, tuple[int, int] | None]] = []
        i = 0
        while i < len(mods):
            m = mods[i]
            if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                msg = f"h_s: unsupported module {type(m).__name__} at position {i}"
                raise ValueError(msg)
            slope = None
            if i + 1 < len(mods) and isinstance(mods[i + 1], (nn.LeakyReLU, nn.ReLU)):
                slope = _leaky_slope(mods[i + 1])
                i += 1
            convs.append((m, slope))
            i += 1
        if convs[-1][1] is not None or any(s is None for _, s in convs[:-1]):
            msg = "h_s must alternate convolutions and (leaky) ReLUs and end with a convolution"
            raise ValueError(msg)

        # Pass 1: integer weights, per-channel exponents, L1 norms -> input formats.
        quant = []
        for m, slope in convs:
            w = m.weight.detach().to("cpu", torch.float64)
            b = (m.bias.detach() if m.bias is not None else torch.zeros(w.shape[1 if isinstance(
                m, nn.ConvTranspose2d) else 0])).to("cpu", torch.float64)
            kh, kw = m.kernel_size
            ok = (
                kh == kw and m.stride[0] == m.stride[1] and m.padding[0] == m.padding[1]
                and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"
                and (not isinstance(m, nn.ConvTranspose2d) or m.output_padding[0] == m.output_padding[1])
            )
            if not ok:
                msg = f"h_s: unsupported convolution {m}"
                raise ValueError(msg)
            transposed = isinstance(m, nn.ConvTranspose2d)
            odim = 1 if transposed else 0
            exp = _channel_exponents(w, odim, WEIGHT_BITS)
            shape = [1, 1, 1, 1]
            shape[odim] = -1
            wq = torch.round(w * torch.pow(2.0, exp.to(torch.float64)).view(shape))
            l1 = wq.abs().sum(dim=[d for d in range(4) if d != odim])  # exact: integers < 2**53
            quant.append((m, slope, transposed, wq, b, exp, int(l1.max().item())))

        f_ins, a_maxes = [], []
        for _, _, _, _, _, _, l1 in quant:
            a_max = FLOAT64_EXACT // max(l1, 1)
            f = a_max.bit_length() - 1 - RANGE_BITS  # so that 2**(f + RANGE_BITS) <= a_max
            f_ins.append(f)
            a_maxes.append(a_max)
        # Requantization shifts must be >= 0: f_next <= min(exp) + f_in.
        for j in range(1, len(quant)):
            f_ins[j] = min(f_ins[j], int(quant[j - 1][5].min()) + f_ins[j - 1])
        if min(f_ins) < MIN_FRAC_BITS:
            msg = f"h_s weights too large for exact evaluation (activation formats {f_ins})"
            raise ValueError(msg)

        layers = []
        for j, (m, slope, transposed, wq, b, exp, l1) in enumerate(quant):
            f_in = f_ins[j]
            bias = torch.round(b * torch.pow(2.0, (exp + f_in).to(torch.float64)))
            if bias.abs().max() >= 2.0**60:
                msg = "h_s bias too large for exact evaluation"
                raise ValueError(msg)
            k = m.kernel_size[0]
            if transposed:
                mat = wq.permute(1, 2, 3, 0).reshape(-1, wq.shape[0])  # (O·k·k)×C
                c_in, c_out = wq.shape[0], wq.shape[1]
            else:
                mat = wq.reshape(wq.shape[0], -1)  # O×(C·k·k)
                c_in, c_out = wq.shape[1], wq.shape[0]
            layers.append(_Layer(
                transposed=transposed, kernel=k, stride=m.stride[0], padding=m.padding[0],
                output_padding=m.output_padding[0] if transposed else 0, in_channels=c_in,
                out_channels=c_out, weight=mat.to(torch.int64), bias=bias.to(torch.int64), exp=exp,
                f_in=f_in, a_max=a_maxes[j], l1_max=l1, slope=slope,
            ))
        if layers[-1].out_channels % 2:
            msg = "h_s must output scales and means (an even number of channels)"
            raise ValueError(msg)
        m_ = layers[-1].out_channels // 2
        mean_shift = layers[-1].exp[m_:] + layers[-1].f_in - MEAN_FRAC_BITS
        if int(mean_shift.min()) < 0:
            msg = "h_s output too coarse for the means format"
            raise ValueError(msg)

        eb = model.entropy_bottleneck
        medians = eb._get_medians().detach().reshape(-1).to("cpu", torch.float32).tolist()
        log_ihg = model.inv_hyper_gain.detach().to("cpu", torch.float32).tolist()
        if len(medians) != layers[0].in_channels or len(log_ihg[0]) != layers[0].in_channels:
            msg = "h_s input channels do not match the entropy bottleneck"
            raise ValueError(msg)
        table = gc.scale_table.detach().to("cpu", torch.float32).tolist()
        if any(b <= a for a, b in zip(table, table[1:])) or not all(map(math.isfinite, table)):
            msg = "the scale table must be finite and strictly increasing"
            raise ValueError(msg)
        bound = float(gc.lower_bound_scale.bound.detach().to("cpu", torch.float32).reshape(-1)[0])
        return cls(layers, medians=medians, log_inv_hyper_gain=log_ihg, scale_table=table,
                   scale_bound=bound, mean_shift=mean_shift)

    # ------------------------------------------------------------------ description

    def formats(self) -> dict[str, object]:
        """The chosen fixed-point formats (for reports and docs)."""
        return {
            "weight_bits": WEIGHT_BITS,
            "layers": [
                {"transposed": L.transposed, "in": L.in_channels, "out": L.out_channels, "kernel": L.kernel,
                 "input_frac_bits": L.f_in, "input_clamp": L.a_max, "input_range": L.a_max / 2**L.f_in,
                 "weight_exp": (int(L.exp.min()), int(L.exp.max())), "max_l1": L.l1_max,
                 "bound_bits": math.log2(L.l1_max * L.a_max) if L.l1_max else 0.0}
                for L in self.layers
            ],
            "mean_frac_bits": MEAN_FRAC_BITS,
            "mean_limit": MEAN_LIMIT,
        }

    @property
    def upsampling(self) -> int:
        """y positions per z position along each axis (4)."""
        u = Fraction(1)
        for L in self.layers:
            u = u * L.stride if L.transposed else u / L.stride
        return int(u)

    def z_rows_needed(self, y_row: int) -> tuple[int, int]:
        """The z rows (inclusive range, unclipped) that y row ``y_row`` depends on (same for columns)."""
        lo = hi = y_row
        for L in reversed(self.layers):
            k, s, p = L.kernel, L.stride, L.padding
            if L.transposed:  # out = i·s - p + t, t in [0, k)
                lo, hi = -((-(lo + p - k + 1)) // s), (hi + p) // s
            else:  # out o reads i = o·s - p + t
                lo, hi = lo * s - p, hi * s - p + k - 1
        return lo, hi

    def z_window(self, y_start: int, y_stop: int, z_size: int) -> tuple[int, int, int]:
        """Which z rows to evaluate for the y rows ``[y_start, y_stop)`` (same for columns).

        Returns ``(z_start, z_stop, offset)``: run on ``z[..., z_start:z_stop, :]`` and take
        output rows ``[offset, offset + y_stop - y_start)``; they equal the whole-image ones.
        """
        if not 0 <= y_start < y_stop:
            msg = f"bad y row range [{y_start}, {y_stop})"
            raise ValueError(msg)
        lo = self.z_rows_needed(y_start)[0]  # both ends are monotone in the y row
        hi = self.z_rows_needed(y_stop - 1)[1]
        z0, z1 = max(0, lo), min(z_size, hi + 1)
        return z0, z1, y_start - self.upsampling * z0

    # ------------------------------------------------------------------ evaluation

    def _input_gain(self, level: float) -> tuple[Tensor, Tensor, int]:
        """Per-channel integers G, MG and the guard shift for ``level`` (reproducible: decimal)."""
        if level in self._gain_cache:
            return self._gain_cache[level]
        f = self.layers[0].f_in
        with localcontext(_DECIMAL):
            gains = [v.exp() for v in _decimal_log_gains(self._log_ihg, level)]
            for guard in range(INPUT_GUARD_BITS, -1, -1):
                scale = Decimal(2) ** (f + guard)
                g = [_to_int(v * scale) for v in gains]
                mg = [_to_int(Decimal(med) * v * scale) for med, v in zip(self._medians, gains, strict=True)]
                if max(map(abs, g)) * SYMBOL_LIMIT + max(map(abs, mg)) + 2**guard < 2**62:
                    break
            else:
                msg = "inverse hyper gains too large for exact evaluation"
                raise ValueError(msg)
        out = (torch.tensor(g, dtype=torch.int64), torch.tensor(mg, dtype=torch.int64), guard)
        if len(self._gain_cache) < 4096:
            self._gain_cache[level] = out
        return out

    def _on(self, device: torch.device) -> dict[str, object]:
        """Weights and tables on ``device`` (int64 and their float64 copies), cached."""
        if device not in self._device_cache:
            self._device_cache[device] = {
                "w64": [L.weight.to(device, torch.float64) for L in self.layers],
                "wint": [L.weight.to(device) for L in self.layers],
                "bias": [L.bias.to(device)[:, None, None] for L in self.layers],
                "shift": [
                    (L.exp + L.f_in - self.layers[j + 1].f_in).to(device)[:, None, None]
                    for j, L in enumerate(self.layers[:-1])
                ],
                "thresholds": self._thresholds.to(device),
                "mean_shift": self._mean_shift.to(device)[:, None, None],
            }
        return self._device_cache[device]

    @staticmethod
    def _linear_f64(L: _Layer, w: Tensor, a: Tensor) -> Tensor:
        """Exact (transposed) convolution of int64 ``a`` (B×C×H×W) via float64 GEMM; int64 out."""
        bsz, _, h, wd = a.shape
        x = a.to(torch.float64)
        k, s, p = L.kernel, L.stride, L.padding
        if L.transposed:
            cols = torch.matmul(w, x.reshape(bsz, L.in_channels, h * wd))  # B×(O·k·k)×(H·W)
            ho = (h - 1) * s - 2 * p + k + L.output_padding
            wo = (wd - 1) * s - 2 * p + k + L.output_padding
            out = F.fold(cols, (ho, wo), k, stride=s, padding=p)
        else:
            ho = (h + 2 * p - k) // s + 1
            wo = (wd + 2 * p - k) // s + 1
            cols = F.unfold(x, k, padding=p, stride=s)  # B×(C·k·k)×(Ho·Wo)
            out = torch.matmul(w, cols).reshape(bsz, L.out_channels, ho, wo)
        return out.to(torch.int64)

    @staticmethod
    def _linear_int64(L: _Layer, w: Tensor, a: Tensor) -> Tensor:
        """The same in int64 arithmetic tap by tap (reference, CPU; slow)."""
        bsz, _, h, wd = a.shape
        k, s, p = L.kernel, L.stride, L.padding
        if L.transposed:
            wt = w.reshape(L.out_channels, k, k, L.in_channels)
            full = torch.zeros(bsz, L.out_channels, (h - 1) * s + k + L.output_padding,
                               (wd - 1) * s + k + L.output_padding, dtype=torch.int64, device=a.device)
            for ty in range(k):
                for tx in range(k):
                    contrib = torch.einsum("oc,bchw->bohw", wt[:, ty, tx, :], a)
                    full[:, :, ty : ty + s * (h - 1) + 1 : s, tx : tx + s * (wd - 1) + 1 : s] += contrib
            ho = (h - 1) * s - 2 * p + k + L.output_padding
            wo = (wd - 1) * s - 2 * p + k + L.output_padding
            return full[:, :, p : p + ho, p : p + wo]
        wt = w.reshape(L.out_channels, L.in_channels, k, k)
        ho = (h + 2 * p - k) // s + 1
        wo = (wd + 2 * p - k) // s + 1
        xp = F.pad(a, (p, p, p, p))
        out = torch.zeros(bsz, L.out_channels, ho, wo, dtype=torch.int64, device=a.device)
        for ty in range(k):
            for tx in range(k):
                patch = xp[:, :, ty : ty + s * (ho - 1) + 1 : s, tx : tx + s * (wo - 1) + 1 : s]
                out += torch.einsum("oc,bchw->bohw", wt[:, :, ty, tx], patch)
        return out

    def _accumulators(self, z_symbols: Tensor, level: float, reference: bool = False) -> Tensor:
        """The last layer's int64 accumulators (B×2M×h×w): scales at ``2**-k``, means likewise."""
        if not isinstance(z_symbols, Tensor) or z_symbols.dim() != 4 or z_symbols.shape[1] != self.N:
            shape = tuple(z_symbols.shape) if isinstance(z_symbols, Tensor) else type(z_symbols).__name__
            msg = f"z symbols must be a B×{self.N}×h×w tensor, got {shape}"
            raise ValueError(msg)
        level = float(level)
        if not math.isfinite(level):
            msg = f"level must be finite, got {level}"
            raise ValueError(msg)
        dev = z_symbols.device
        if reference and dev.type != "cpu":
            msg = "the int64 reference runs on the CPU only"
            raise ValueError(msg)
        P = self._on(dev)
        s = z_symbols
        if s.is_floating_point():
            if not bool(torch.isfinite(s).all()):
                msg = "z symbols must be finite"
                raise ValueError(msg)
            s = torch.round(s).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)  # before the cast: no UB
        s = s.to(torch.int64).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)
        g, mg, guard = self._input_gain(level)
        a = s * g.to(dev)[:, None, None] + mg.to(dev)[:, None, None]
        if guard:
            a = (a + (1 << (guard - 1))) >> guard
        a = a.clamp(-self.layers[0].a_max, self.layers[0].a_max)
        for j, L in enumerate(self.layers):
            if reference:
                acc = self._linear_int64(L, P["wint"][j], a)
            else:
                acc = self._linear_f64(L, P["w64"][j], a)
            acc = acc + P["bias"][j]
            if j == len(self.layers) - 1:
                return acc
            sh = P["shift"][j]
            a = (acc + ((1 << sh) >> 1)) >> sh
            nxt = self.layers[j + 1].a_max
            a = a.clamp(-nxt, nxt)
            p, q = L.slope  # type: ignore[misc]
            a = torch.where(a < 0, torch.div(2 * p * a + q, 2 * q, rounding_mode="floor"), a)
        raise AssertionError  # unreachable

    def _outputs(self, acc: Tensor) -> tuple[Tensor, Tensor]:
        P = self._on(acc.device)
        bsz, _, h, w = acc.shape
        sacc, macc = acc[:, : self.M], acc[:, self.M :]
        thr = P["thresholds"]
        idx = torch.searchsorted(  # count of thresholds strictly below acc
            thr.expand(bsz, -1, -1).contiguous(), sacc.reshape(bsz, self.M, h * w).contiguous(), side="left"
        )
        idx = idx.clamp_(min=self._min_index).to(torch.int32).reshape(bsz, self.M, h, w)
        sh = P["mean_shift"]
        lim = MEAN_LIMIT << MEAN_FRAC_BITS
        mq = ((macc + ((1 << sh) >> 1)) >> sh).clamp(-lim, lim)
        means = mq.to(torch.float32) * (2.0**-MEAN_FRAC_BITS)  # exact: |mq| < 2**24, power-of-two scale
        return idx, means

    @torch.no_grad()
    def __call__(self, z_symbols: Tensor, level: float) -> tuple[Tensor, Tensor]:
        """Table indexes (int32) and means (float32 multiples of 2**-10), each B×M×(4h)×(4w).

        Args:
            z_symbols: B×N×h×w decoded z symbols (integers; a float tensor is rounded), e.g.
                :func:`symbols_from_z_hat` of the EntropyBottleneck's output. CPU or CUDA;
                other devices (no float64, e.g. MPS) are evaluated on the CPU.
            level: the continuous rate level (clamped to ``[0, levels-1]`` like the model does).
        """
        if isinstance(z_symbols, Tensor) and z_symbols.device.type not in ("cpu", "cuda"):
            idx, means = self._outputs(self._accumulators(z_symbols.cpu(), level))
            return idx.to(z_symbols.device), means.to(z_symbols.device)
        return self._outputs(self._accumulators(z_symbols, level))

    @torch.no_grad()
    def reference(self, z_symbols: Tensor, level: float) -> tuple[Tensor, Tensor]:
        """The same outputs from pure int64 arithmetic (CPU, slow): a check of :meth:`__call__`."""
        return self._outputs(self._accumulators(z_symbols, level, reference=True))

    @torch.no_grad()
    def scales(self, z_symbols: Tensor, level: float) -> Tensor:
        """The scales as float64 ``acc · 2**-k`` (exact when |acc| ≤ 2**53, i.e. in practice always)."""
        acc = self._accumulators(z_symbols, level)[:, : self.M]
        k = self._scale_exp.to(acc.device)[:, None, None]
        return acc.to(torch.float64) * torch.pow(2.0, -k.to(torch.float64))


def symbols_from_z_hat(z_hat: Tensor, medians: Tensor) -> Tensor:
    """z symbols (int64) from the EntropyBottleneck's dequantized output and its medians."""
    return torch.round(z_hat - medians.reshape(1, -1, 1, 1).to(z_hat)).to(torch.int64)


# ---------------------------------------------------------------------------------- context

#: Fractional bits of the context network's inputs before the gain (scales and means).
CTX_IN_FRAC = 16
#: Fractional bits of the per-channel gains of the context network's inputs and outputs.
CTX_GAIN_BITS = 24
#: Fractional bits of the context network's output before its gain (so the corrected scales
#: and means are integers at ``2**-(CTX_OUT_FRAC + CTX_GAIN_BITS)``).
CTX_OUT_FRAC = 16
#: Decoded latents are clamped to ``±YHAT_LIMIT`` before they enter the context.
YHAT_LIMIT = 2**14


def _decimal_gains(log_table: list[list[float]], level: float, bits: int) -> list[int]:
    """``round(exp(interpolated log-gain) · 2**bits)`` per channel, computed with :mod:`decimal`."""
    with localcontext(_DECIMAL):
        scale = Decimal(2) ** bits
        return [_to_int(v.exp() * scale) for v in _decimal_log_gains(log_table, level)]


def _quantize_conv(m: nn.Conv2d, weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, int]:
    """Integer weights (O×(C·k·k)), float64 bias, per-output exponents and the largest L1 of ``m``."""
    w = (m.weight if weight is None else weight).detach().to("cpu", torch.float64)
    kh, kw = m.kernel_size
    ok = (kh == kw and m.stride == (1, 1) and m.padding[0] == m.padding[1] == kh // 2 and m.dilation == (1, 1)
          and m.groups == 1 and m.padding_mode == "zeros" and kh % 2 == 1)
    if not ok:
        msg = f"context: unsupported convolution {m}"
        raise ValueError(msg)
    exp = _channel_exponents(w, 0, WEIGHT_BITS)
    wq = torch.round(w * torch.pow(2.0, exp.to(torch.float64)).view(-1, 1, 1, 1))
    l1 = int(wq.abs().sum(dim=(1, 2, 3)).max().item())
    b = m.bias.detach().to("cpu", torch.float64) if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    return wq.reshape(wq.shape[0], -1), b, exp, l1


def _frac_for(l1: int) -> tuple[int, int]:
    a_max = FLOAT64_EXACT // max(l1, 1)
    return a_max.bit_length() - 1 - RANGE_BITS, a_max


class ExactContext:
    """The non-anchor entropy parameters of a checkerboard model, evaluated exactly.

    The companion of :class:`ExactEntropyParameters` for
    :class:`~vaecodec.model.CheckerboardModel`: from the hyperprior's exact outputs (table
    indexes and means) and the decoded anchors, it computes the table indexes and means of
    the non-anchors with the same integer method (integer weights with per-channel
    power-of-two scales, fixed-point activations, float64 GEMMs whose every partial sum is an
    integer below 2**53). Its inputs are exact by construction: a scale enters as its table
    entry, a mean and a decoded latent as multiples of ``2**-MEAN_FRAC_BITS``; the level's
    gains are computed with :mod:`decimal`. The corrected scale ``table[index] + gain·Δ`` is
    compared with the scale table as integers at ``2**-(CTX_OUT_FRAC + CTX_GAIN_BITS)``.

    Receptive field: the context convolution reads ±``radius`` latents; the rest is 1×1.
    """

    def __init__(self, model: nn.Module) -> None:
        gc = model.gaussian_conditional
        if gc.scale_table is None or gc.scale_table.numel() < 2:
            msg = "the model's scale table is not built; call model.update(force=True) first"
            raise ValueError(msg)
        ctx = model.context
        self.radius = ctx.kernel_size[0] // 2
        convs: list[tuple[nn.Conv2d, tuple[int, int] | None]] = []
        mods = list(model.entropy_parameters)
        i = 0
        while i < len(mods):
            slope = _leaky_slope(mods[i + 1]) if i + 1 < len(mods) else None
            convs.append((mods[i], slope))
            i += 2 if slope is not None else 1
        qc = _quantize_conv(ctx, ctx.weight * ctx.mask)
        qe = [_quantize_conv(m) for m, _ in convs]
        self.M = ctx.out_channels
        self.c_in = ctx.in_channels
        if self.c_in != 2 * self.M:
            msg = f"context: expected {2 * self.M} input channels (anchors and residuals), got {self.c_in}"
            raise ValueError(msg)
        # formats: the context's input, then each entropy-parameters layer's input
        f_c, a_c = _frac_for(qc[3])
        f_in, a_in = [], []
        prev_exp, prev_f = qc[2], f_c
        for j, (_, _, exp, l1) in enumerate(qe):
            f, a = _frac_for(l1)
            f = min(f, int(prev_exp.min()) + prev_f)
            if j == 0:  # the first layer also reads the gained scales and means (any format)
                f = min(f, CTX_IN_FRAC + CTX_GAIN_BITS)
            f_in.append(f)
            a_in.append(a)
            prev_exp, prev_f = exp, f
        if min([f_c, *f_in]) < MIN_FRAC_BITS or f_c > MEAN_FRAC_BITS + CTX_GAIN_BITS:
            msg = f"context weights too large for exact evaluation (formats {f_c}, {f_in})"
            raise ValueError(msg)
        out_shift = qe[-1][2] + f_in[-1] - CTX_OUT_FRAC
        if int(out_shift.min()) < 0:
            msg = "context output too coarse for its format"
            raise ValueError(msg)
        self.f_c, self.a_c, self.f_in, self.a_in = f_c, a_c, f_in, a_in
        self.slopes = [s for _, s in convs]
        self.w = [qc[0].to(torch.int64)] + [q[0].to(torch.int64) for q in qe]
        self.w64 = [w.to(torch.float64) for w in self.w]
        self.bias = [torch.round(qc[1] * torch.pow(2.0, (qc[2] + f_c).to(torch.float64))).to(torch.int64)]
        for (_, b, exp, _), f in zip(qe, f_in, strict=True):
            self.bias.append(torch.round(b * torch.pow(2.0, (exp + f).to(torch.float64))).to(torch.int64))
        if max(int(b.abs().max()) for b in self.bias) >= 2**60:
            msg = "context bias too large for exact evaluation"
            raise ValueError(msg)
        self.shifts = [qc[2] + f_c - f_in[0]] + [qe[j][2] + f_in[j] - f_in[j + 1] for j in range(len(qe) - 1)]
        self.out_shift = out_shift
        self.k = ctx.kernel_size[0]
        self._log_g = model.gain.detach().to("cpu", torch.float32).tolist()
        self._log_ig = model.inv_gain.detach().to("cpu", torch.float32).tolist()
        table = gc.scale_table.detach().to("cpu", torch.float32).tolist()
        out_bits = CTX_OUT_FRAC + CTX_GAIN_BITS
        self._table_in = torch.tensor([_to_int(Decimal(t) * 2**CTX_IN_FRAC) for t in table], dtype=torch.int64)
        self._table_out = torch.tensor([int(Fraction(t) * 2**out_bits) for t in table], dtype=torch.int64)
        self._thresholds = torch.tensor([math.floor(Fraction(t) * 2**out_bits) for t in table[:-1]], dtype=torch.int64)
        bound = float(gc.lower_bound_scale.bound.detach().to("cpu", torch.float32).reshape(-1)[0])
        self._min_index = sum(1 for t in table[:-1] if t < bound)
        self._gains: dict[float, tuple[Tensor, Tensor]] = {}

    def _level_gains(self, level: float) -> tuple[Tensor, Tensor]:
        if level not in self._gains:
            g = torch.tensor(_decimal_gains(self._log_g, level, CTX_GAIN_BITS), dtype=torch.int64)
            ig = torch.tensor(_decimal_gains(self._log_ig, level, CTX_GAIN_BITS), dtype=torch.int64)
            if int(g.max()) >= 2**31 or int(ig.max()) >= 2**31:
                msg = "gains too large for exact evaluation"
                raise ValueError(msg)
            if len(self._gains) < 4096:
                self._gains[level] = (g, ig)
            return g, ig
        return self._gains[level]

    @staticmethod
    def _requant(x: Tensor, shift: Tensor | int) -> Tensor:
        """Arithmetic right shift with round-half-up (per row when ``shift`` is a tensor)."""
        if isinstance(shift, int):
            return (x + ((1 << shift) >> 1)) >> shift if shift > 0 else x << (-shift)
        sh = shift.view(-1, 1)
        return (x + ((1 << sh) >> 1)) >> sh

    def _taps(self) -> list[tuple[int, int]]:
        """The (dy, dx) offsets the masked context convolution reads (the other colour)."""
        r = self.k // 2
        return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy + dx) % 2]

    def _context_weight(self, dtype: torch.dtype) -> Tensor:
        """The context weights restricted to its taps, O×(taps·C), tap-major (cached)."""
        key = f"_ctx_w_{dtype}"
        if not hasattr(self, key):
            k, c = self.k, self.c_in
            w = self.w[0].reshape(-1, c, k, k).permute(0, 2, 3, 1)  # O×k×k×C
            rows = [w[:, dy + k // 2, dx + k // 2] for dy, dx in self._taps()]
            setattr(self, key, torch.cat(rows, 1).to(dtype).contiguous())
        return getattr(self, key)

    def _gather_taps(self, a: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """(taps·C)×P: the inputs every tap reads at positions (rows, cols) (zero past the border)."""
        r = self.k // 2
        ap = F.pad(a[0], (r, r, r, r))
        return torch.cat([ap[:, rows + r + dy, cols + r + dx] for dy, dx in self._taps()], 0)

    def _matmul(self, j: int, x: Tensor, reference: bool) -> Tensor:
        """Exact integer product of layer ``j``'s weights with int64 columns ``x``, plus its bias."""
        if j == 0:
            w = self._context_weight(torch.int64 if reference else torch.float64)
        else:
            w = self.w[j] if reference else self.w64[j]
        if reference:
            acc = torch.zeros(w.shape[0], x.shape[1], dtype=torch.int64)
            for c0 in range(0, w.shape[1], 64):  # int64 has no BLAS; blocks keep it bounded
                acc += (w[:, c0 : c0 + 64, None] * x[None, c0 : c0 + 64]).sum(1)
        else:
            acc = torch.matmul(w, x.to(torch.float64)).to(torch.int64)
        return acc + self.bias[j].view(-1, 1)

    @torch.no_grad()
    def __call__(self, indexes: Tensor, means: Tensor, y_hat_anchors: Tensor, level: float,
                 *, parity: int = 0, reference: bool = False) -> tuple[Tensor, Tensor]:
        """Table indexes (int32) and means (float32) of every position after the context pass.

        Args:
            indexes, means: the hyperprior's, 1×M×h×w (:class:`ExactEntropyParameters`).
            y_hat_anchors: decoded anchors (symbols + means; float32 multiples of 2**-10),
                zero at the other positions.
            level: the continuous level.
            parity: ``(row + col) % 2`` of the crop's first position in the whole latent grid
                (a crop starting at an odd position has its anchors at odd local positions).
            reference: evaluate the products in int64 (slow; a check of the float64 GEMMs).
        Anchors keep the hyperprior's tables and means; only the other positions are computed.
        """
        if indexes.dim() != 4 or indexes.shape[0] != 1 or indexes.shape[1] != self.M:
            msg = f"context: expected 1×{self.M}×h×w tables, got {tuple(indexes.shape)}"
            raise ValueError(msg)
        g, ig = self._level_gains(float(level))
        M = self.M
        _, _, h, w = indexes.shape
        rr, cc = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        na = (rr + cc + parity) % 2 == 1
        rows, cols = rr[na], cc[na]
        idx = indexes[0][:, rows, cols].to(torch.int64)  # M×P
        m_int = torch.round(means[0][:, rows, cols].to(torch.float64) * 2**MEAN_FRAC_BITS).to(torch.int64)
        igv = ig.view(-1, 1)
        s0 = self._table_in[idx]
        m0 = m_int << (CTX_IN_FRAC - MEAN_FRAC_BITS)
        sh_in = CTX_IN_FRAC + CTX_GAIN_BITS - self.f_in[0]
        hyper = torch.cat([self._requant(s0 * igv, sh_in), self._requant(m0 * igv, sh_in)], 0)
        hyper = hyper.clamp(-self.a_in[0], self.a_in[0])
        yq = torch.round(y_hat_anchors.to(torch.float64) * 2**MEAN_FRAC_BITS).to(torch.int64)
        lim_y = YHAT_LIMIT << MEAN_FRAC_BITS
        yq = yq.clamp(-lim_y, lim_y)
        anchor = ((rr + cc + parity) % 2 == 0)[None, None]
        mq_all = torch.round(means.to(torch.float64) * 2**MEAN_FRAC_BITS).to(torch.int64)
        res = torch.where(anchor, (yq - mq_all).clamp(-lim_y, lim_y), 0)  # ŷ − mean: the anchor's symbol
        yq = torch.cat([yq, res], 1) * torch.cat([ig, ig]).view(1, -1, 1, 1)
        a = self._requant(yq.reshape(2 * M, -1), MEAN_FRAC_BITS + CTX_GAIN_BITS - self.f_c).reshape(yq.shape)
        a = a.clamp(-self.a_c, self.a_c)
        ctx = self._requant(self._matmul(0, self._gather_taps(a, rows, cols), reference), self.shifts[0])
        a = torch.cat([hyper, ctx.clamp(-self.a_in[0], self.a_in[0])], 0)
        for j in range(1, len(self.w)):
            acc = self._matmul(j, a, reference)
            if j == len(self.w) - 1:
                break
            a = self._requant(acc, self.shifts[j]).clamp(-self.a_in[j], self.a_in[j])
            p, q = self.slopes[j - 1]  # type: ignore[misc]
            a = torch.where(a < 0, torch.div(2 * p * a + q, 2 * q, rounding_mode="floor"), a)
        lim = 1 << (RANGE_BITS + CTX_OUT_FRAC)
        d = self._requant(acc, self.out_shift).clamp(-lim, lim) * torch.cat([g, g]).view(-1, 1)
        s = self._table_out[idx] + d[:M]
        new_idx = torch.searchsorted(self._thresholds.expand(M, -1).contiguous(), s.contiguous(), side="left")
        new_idx = new_idx.clamp_(min=self._min_index).to(torch.int32)
        out_bits = CTX_OUT_FRAC + CTX_GAIN_BITS
        mt = (m_int << (out_bits - MEAN_FRAC_BITS)) + d[M:]
        lim_m = MEAN_LIMIT << MEAN_FRAC_BITS
        mq = self._requant(mt, out_bits - MEAN_FRAC_BITS).clamp(-lim_m, lim_m)
        out_idx = indexes.to(torch.int32).clone()
        out_mu = means.to(torch.float32).clone()
        out_idx[0][:, rows, cols] = new_idx
        out_mu[0][:, rows, cols] = mq.to(torch.float32) * (2.0**-MEAN_FRAC_BITS)
        return out_idx, out_mu
