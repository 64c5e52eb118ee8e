"""Image quality metrics and the Bjøntegaard rate difference.

Conventions (the field's, as in CompressAI's and TFC's Kodak results):

* bpp counts the whole encoded file: ``8 * len(data) / (H * W)``.
* PSNR-RGB is computed on the 8-bit decoded image: MSE over every pixel and channel,
  peak 255, one PSNR per image; a dataset point is the mean of the per-image values.
* MS-SSIM is ``pytorch_msssim.ms_ssim`` on the uint8 values as float, ``data_range=255``;
  its dB form is ``-10 * log10(1 - ms_ssim)``.
* BD-rate: PCHIP interpolation of ln(rate) as a function of the quality metric, integrated
  over the overlap of the two curves' metric ranges; ``exp(mean ln-rate difference) - 1``.
  G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", ITU-T
  VCEG-M33 (2001); the PCHIP variant replaces that paper's cubic polynomial fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: pytorch-msssim's default window and 5 scales need a smaller side > (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of a whole encoded file."""
    return 8.0 * num_bytes / (height * width)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels and channels of two same-shape uint8 images."""
    if a.shape != b.shape:
        msg = f"shape mismatch: {a.shape} vs {b.shape}"
        raise ValueError(msg)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two 8-bit images (``inf`` when they are identical)."""
    m = mse(a, b)
    return math.inf if m == 0 else 10.0 * math.log10(peak * peak / m)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two H×W×3 uint8 images; NaN when the image is too small for 5 scales."""
    if a.shape != b.shape:
        msg = f"shape mismatch: {a.shape} vs {b.shape}"
        raise ValueError(msg)
    if min(a.shape[0], a.shape[1]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def to_t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(x, dtype=np.float32)).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(_ms_ssim(to_t(a), to_t(b), data_range=255.0, size_average=True))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM as decibels, ``-10 log10(1 - value)`` (``inf`` at 1, NaN stays NaN)."""
    if math.isnan(value):
        return math.nan
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def _prepare(rate: Sequence[float], metric: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by metric, duplicates of the metric merged (mean of ln-rate)."""
    r = np.asarray(rate, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if r.shape != m.shape:
        msg = f"rate and metric lengths differ: {r.shape} vs {m.shape}"
        raise ValueError(msg)
    ok = np.isfinite(r) & np.isfinite(m) & (r > 0)
    r, m = np.log(r[ok]), m[ok]
    order = np.argsort(m, kind="stable")
    r, m = r[order], m[order]
    um, inv = np.unique(m, return_inverse=True)
    lr = np.bincount(inv, weights=r) / np.bincount(inv)
    return um, lr


def bd_rate(anchor_rate: Sequence[float], anchor_metric: Sequence[float],
            test_rate: Sequence[float], test_metric: Sequence[float],
            window: tuple[float, float] | None = None) -> float:
    """Bjøntegaard rate difference of ``test`` against ``anchor``, as a fraction.

    -0.5 means the test codec needs half the anchor's rate at equal quality. The integral
    runs over the overlap of both curves' metric ranges (further clipped to ``window``).
    Returns NaN when a curve has fewer than two usable points or the ranges do not overlap.
    """
    from scipy.interpolate import PchipInterpolator

    am, ar = _prepare(anchor_rate, anchor_metric)
    tm, tr = _prepare(test_rate, test_metric)
    if len(am) < 2 or len(tm) < 2:
        return math.nan
    lo, hi = max(am[0], tm[0]), min(am[-1], tm[-1])
    if window is not None:
        lo, hi = max(lo, window[0]), min(hi, window[1])
    if not hi > lo:
        return math.nan
    ia = PchipInterpolator(am, ar).integrate(lo, hi)
    it = PchipInterpolator(tm, tr).integrate(lo, hi)
    return float(math.exp((it - ia) / (hi - lo)) - 1.0)


def bd_rate_polyfit(anchor_rate: Sequence[float], anchor_metric: Sequence[float],
                    test_rate: Sequence[float], test_metric: Sequence[float]) -> float:
    """The classic Bjøntegaard rate difference (cubic polynomial fit of ln-rate), as a cross-check.

    Same overlap and sign convention as :func:`bd_rate`; needs at least 4 points per curve.
    """
    am, ar = _prepare(anchor_rate, anchor_metric)
    tm, tr = _prepare(test_rate, test_metric)
    if len(am) < 4 or len(tm) < 4:
        return math.nan
    lo, hi = max(am[0], tm[0]), min(am[-1], tm[-1])
    if not hi > lo:
        return math.nan
    ia, it = (np.polyint(np.polyfit(m, r, 3)) for m, r in ((am, ar), (tm, tr)))
    diff = (np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))
    return float(math.exp(diff / (hi - lo)) - 1.0)


def overlap(a_metric: Sequence[float], b_metric: Sequence[float]) -> tuple[float, float] | None:
    """The shared finite metric range of two curves, or None."""
    a = [v for v in a_metric if math.isfinite(v)]
    b = [v for v in b_metric if math.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    return (lo, hi) if hi > lo else None
