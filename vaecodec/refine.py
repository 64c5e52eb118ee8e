"""Encoder-side refinement of the latents: better files from the same decoder.

The analysis transform g_a predicts latents in one pass, and that prediction is not the best
the decoder could be given: for one particular image, gradient descent on y itself lowers the
rate–distortion cost ``rate + λ·255²·MSE`` that training minimized on average. This is the
"amortization gap" of Yang, Bamler and Mandt, "Improving Inference for Neural Image
Compression" (NeurIPS 2020), and the per-image latent optimization of Campos et al.,
"Content Adaptive Optimization for Neural Image Compression" (CVPR Workshops 2019).

Only the encoder changes, so refined files decode with any vaecodec that has the weights
(like a slower ``cwebp -m 6`` against ``-m 0``). The cost is ``steps`` forward and backward
passes of the hyper-analysis, hyper-synthesis and synthesis per image.

How it optimizes:

* the rate of y is taken at y plus uniform noise (the training proxy); the synthesis sees the
  rounded y (straight-through), as in training; z is rounded straight-through;
* with a checkerboard model the non-anchors' scales and means come from the context over the
  rounded anchors, so the rate is the one the coder will spend (the anchors' effect on their
  neighbours' parameters is not differentiated);
* Adam on y with a cosine-decaying step size, with the transforms under bf16 autocast on a
  CPU with native bf16 (``fast_bf16``) and in float32 elsewhere;
* large images are refined a tile of ``TILE`` latents at a time, each with a margin of its
  refined or predicted neighbours held fixed, so memory stays bounded;
* the noise comes from a generator seeded per tile, so a refined encode is reproducible;
* each tile keeps the latents of its lowest cost seen (the analysis's own y if no step
  helped), and stops at a non-finite cost; the codec codes the analysis's y instead of
  refined latents its tables cannot hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .tiling import tiles as _tiles
from .model import HyperpriorModel, fast_bf16, lambda_at, ste_round

#: Adam's initial step on the (gained) latents. Chosen with msh@11 on three held-out training
#: photos at qualities 15, 50 and 85, 20 steps: the cost fell by 2.5 % on average with the
#: noisy rate at 0.005 (every point lower), by 1.7 % and 1.5 % with a straight-through rate at
#: 0.003 and 0.006; on 256×384 crops, 0.01 did worse than 0.005.
REFINE_LR = 0.005
#: Latents per tile side (×16 pixels), and the fixed margin around a tile (a multiple of 4,
#: the hyper-analysis's stride, so the tile's z grid lines up with the image's; being even, it
#: also keeps each window's checkerboard in step with the image's).
TILE = 48
MARGIN = 4


def refine_latents(
    model: HyperpriorModel, y: Tensor, rgb: np.ndarray, level: float, steps: int, *,
    device: torch.device | str = "cpu", lr: float = REFINE_LR, seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Return y (1×M×h×w, gained, float32 CPU) refined for ``steps`` Adam steps on ``rgb``.

    Args:
        model: the model whose transforms and entropy models define the cost (its parameters
            are not changed and get no gradients).
        y: the analysis transform's latents for ``rgb`` at ``level``.
        rgb: H×W×3 uint8, the image y was computed from.
        level: the continuous rate level (0..levels-1).
        steps: gradient steps per tile; 0 returns y unchanged.
        progress: called as ``progress(done, total)`` after each step (steps of all tiles).
    """
    if steps <= 0:
        return y
    device = torch.device(device)
    lv = torch.tensor([float(level)])
    lam = float(lambda_at(lv))
    _, ig, hg, ihg = (t.to(device) for t in model.gains(lv))
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    medians = eb._get_medians().detach().reshape(1, -1, 1, 1).to(device)
    h, w = rgb.shape[:2]
    _, _, hy, wy = y.shape
    y = y.clone()
    STRIDE = model.latent_stride  # noqa: N806 (pixels per latent)
    layout = list(_tiles(hy, wy, TILE, MARGIN))
    total = steps * len(layout)
    for k, ((r0, r1, c0, c1), (a0, a1, b0, b1)) in enumerate(layout):
        # the tile's real pixels, relative to the window's origin
        pr0, pr1 = (r0 - a0) * STRIDE, min(h - a0 * STRIDE, (r1 - a0) * STRIDE)
        pc0, pc1 = (c0 - b0) * STRIDE, min(w - b0 * STRIDE, (c1 - b0) * STRIDE)
        if pr1 <= pr0 or pc1 <= pc0:
            if progress is not None:
                progress((k + 1) * steps, total)
            continue
        target = torch.from_numpy(
            np.array(rgb[r0 * STRIDE : min(h, r1 * STRIDE), c0 * STRIDE : min(w, c1 * STRIDE)])
        ).to(device).permute(2, 0, 1)[None].float().div_(255)
        window = y[..., a0:a1, b0:b1].to(device)
        core = torch.zeros_like(window[:, :1])
        core[..., r0 - a0 : r1 - a0, c0 - b0 : c1 - b0] = 1
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + r0 * 4096 + c0)
        refined = _refine_window(
            model, window, core, target, (pr0, pr1, pc0, pc1), lam, (ig, hg, ihg), medians, steps, lr,
            gen, pixels=(pr1 - pr0) * (pc1 - pc0), level=lv.to(device),
            tick=None if progress is None else (lambda i, k=k: progress(k * steps + i, total)),
        )
        y[..., r0:r1, c0:c1] = refined[..., r0 - a0 : r1 - a0, c0 - b0 : c1 - b0].float().cpu()
    return y


def _refine_window(
    model: HyperpriorModel, window: Tensor, core: Tensor, target: Tensor, box: tuple[int, int, int, int],
    lam: float, gains: tuple[Tensor, Tensor, Tensor], medians: Tensor, steps: int, lr: float,
    gen: torch.Generator, *, pixels: int, level: Tensor, tick: Callable[[int], None] | None = None,
) -> Tensor:
    ig, hg, ihg = gains
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    pr0, pr1, pc0, pc1 = box
    fixed = window.detach()
    delta = torch.zeros_like(fixed, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    use_bf16 = window.device.type == "cpu" and fast_bf16(window.device)
    best_loss, best = math.inf, torch.zeros_like(fixed)  # the lowest cost seen; zero = the analysis's y
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
        y = fixed + delta * core
        with torch.autocast(device_type=window.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            z = model.h_a(y).float() * hg
            z_hat = ste_round(z - medians) + medians
            scales, means = model.h_s(z_hat * ihg).float().chunk(2, 1)
            scales, means = model.y_params(y, scales, means, level)
            y_hat = ste_round(y - means) + means
            x_hat = model.g_s(y_hat * ig).float()[..., pr0:pr1, pc0:pc1]
        noise = torch.rand(y.shape, generator=gen, device=y.device) - 0.5
        y_lik = gc.likelihood_lower_bound(gc._likelihood(y + noise, scales, means))
        # the factorized prior wants z as C×1×(elements), as compressai's forward arranges it
        z_flat = z_hat.permute(1, 0, 2, 3).reshape(z_hat.shape[1], 1, -1)
        z_lik = eb.likelihood_lower_bound(eb._likelihood(z_flat)[0])
        # rate of the tile's own latents (the margin belongs to its neighbours) and of z
        bits = -(torch.log2(y_lik) * core).sum() - torch.log2(z_lik).sum() * core.mean()
        mse = (x_hat.clamp(0, 1) - target).pow(2).mean()
        loss = bits / pixels + lam * 255**2 * mse
        (grad,) = torch.autograd.grad(loss, [delta])
        if not (torch.isfinite(loss) and torch.isfinite(grad).all()):
            break  # keep the best latents so far rather than code garbage
        if loss.item() < best_loss:
            best_loss, best = loss.item(), delta.detach().clone()
        delta.grad = grad
        opt.step()
        if tick is not None:
            tick(i + 1)
    return (fixed + best * core).detach()
