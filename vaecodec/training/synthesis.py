"""Training a deeper synthesis for a checkerboard model, everything else frozen.

The analysis, the hyperprior, the gains and the context of the parent model are kept, so
every file it writes has the same size with the new synthesis: only the decoded image
changes. The parent's synthesis is grown into :class:`~vaecodec.model.ResidualSynthesisModel`
(residual blocks at 1/8 and 1/4 resolution whose last convolution starts at zero: the first
step decodes exactly as the parent does), and the whole synthesis is trained on the latents
the codec really decodes: ``g_a`` runs once per training photo and its mirror image (cached,
as for the context), and a step quantizes random crops of them at random continuous levels
exactly as the encoder does (hyperprior, coded scales and means, checkerboard context,
rounding around each mean) before the synthesis.

The loss is measured only where the crop decodes as the whole image does: each crop carries
a margin of the model's ``tile_margin`` latents on every side (more than the synthesis'
reach), and only the pixels inside it count. Scored over the whole crop, the synthesis learns
to repair the crop's own edges (zero padding next to latents that came from a whole image),
and whole images then decode worse: 2 to 4 dB in a measured run.

The objective is the mean over the batch of ``10·log10(MSE)`` (minus the PSNR), so that a
decibel gained counts the same at every rate, as it does in the Bjøntegaard rate.
Validation decodes the held-out photos whole at levels 0, 2, 4, 6 and 8 and reports the
PSNR gain over the parent.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import TrainingError
from ..model import (CheckerboardModel, ResidualSynthesisModel, SynthesisResidual, fast_bf16,
                     grow_residual_synthesis)
from .budget import budget_lr, stop_on_sigterm
from .context import base_state, crop_windows, photos
from .loop import list_images, split_train_val


#: The parent's synthesis layers learn at this fraction of the learning rate of the new blocks.
#: Adam's first steps move every weight by about the learning rate, whatever its gradient: with
#: one rate for all, a run was 0.07 dB below its parent on the held-out photos after 414 steps
#: (0.18 dB at level 8), while the new blocks start from zero and need the full rate.
BASE_LR_SCALE = 0.1


def grow_from(state: dict[str, Tensor]) -> ResidualSynthesisModel:
    """A residual-synthesis model from a checkerboard model's state (or its own, to continue)."""
    N, M, levels = state["g_a.0.weight"].shape[0], state["g_a.6.weight"].shape[0], state["gain"].shape[0]
    model = ResidualSynthesisModel(N, M, levels)
    if "context.weight" not in state:
        msg = "the parent must be a checkerboard model (such as mshc@1)"
        raise TrainingError(msg)
    if "g_s.2.conv1.weight" not in state:
        state = grow_residual_synthesis(state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not (k.startswith("g_s.") and ".conv" in k)]
    if bad or unexpected:
        msg = f"weights do not fit: missing {bad[:4]}, unexpected {list(unexpected)[:4]}"
        raise TrainingError(msg)
    return model


@torch.no_grad()
def quantize(model: CheckerboardModel, ya: Tensor, level: Tensor) -> Tensor:
    """The decoded latents ``ŷ·ig`` of ungained latents ``ya`` at ``level``, as the codec rounds them."""
    g, ig = model.gains(level)[:2]
    y = ya * g
    _, scales, means = model.hyper_params(y, level, noise=False)
    _, m = model.y_params(y, scales, means, level)
    return (torch.round(y - m) + m) * ig


@torch.no_grad()
def cache(model: CheckerboardModel, files: list[Path], *, flips: bool) -> list[tuple[Tensor, np.ndarray]]:
    """(g_a output 1×M×h×w float32, the pixels h·16×w·16×3 uint8) per photo, mirrored copies too."""
    return [(model.g_a(x).float(), np.ascontiguousarray(im)) for x, im in photos(files, flips=flips)]


def crop_batch(data: list[tuple[Tensor, np.ndarray]], n: int, size: int,
               rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``n`` random crops of ``size`` latents (and their ``16·size`` pixels, float in [0, 1])."""
    latents = [y for y, _ in data]
    windows = crop_windows(latents, n, size, rng)
    ys = [latents[k][..., i : i + size, j : j + size] for k, i, j in windows]
    xs = [torch.from_numpy(data[k][1][i * 16 : (i + size) * 16, j * 16 : (j + size) * 16]) for k, i, j in windows]
    x = torch.stack(xs).permute(0, 3, 1, 2).float().div_(255)
    return torch.cat(ys), x


@torch.no_grad()
def psnrs(model: CheckerboardModel, data: list[tuple[Tensor, np.ndarray]], levels: tuple[float, ...]) -> np.ndarray:
    """PSNR (dB, 8-bit output) of each held-out photo (columns) at each level (rows)."""
    out = np.zeros((len(levels), len(data)))
    for a, lv in enumerate(levels):
        level = torch.full((1,), lv)
        for b, (ya, im) in enumerate(data):
            hy, wy = ya.shape[-2] // 4 * 4, ya.shape[-1] // 4 * 4  # whole z positions
            x_hat = model.g_s(quantize(model, ya[..., :hy, :wy], level)).clamp(0, 1).mul(255).round()
            ref = torch.from_numpy(im[: hy * 16, : wy * 16]).permute(2, 0, 1)[None].float()
            out[a, b] = 10 * math.log10(255**2 / float(((x_hat - ref) ** 2).mean()))
    return out


def train(args: argparse.Namespace) -> dict:
    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    parent_state = base_state(args.init)
    model = grow_from(parent_state)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("g_s."))
    model.eval()
    autocast = {"bf16": True, "fp32": False}.get(args.precision, fast_bf16("cpu"))

    files = list_images(args.data)
    train_files, val_files = split_train_val(files, args.val_fraction)
    if not val_files:
        msg = f"{args.data}: no photos held out for validation (too few files for the validation fraction)"
        raise TrainingError(msg)
    train_data = cache(model, train_files, flips=True)
    val_data = cache(model, val_files, flips=False)
    val_levels = (0.0, 2.0, 4.0, 6.0, 8.0)
    base_psnr = psnrs(model, val_data, val_levels)  # the parent's: the grown model decodes as it does
    print(json.dumps({"cache_s": round(time.monotonic() - t_start, 1), "train": len(train_data),
                      "val": len(val_data), "parent_psnr": [round(float(v), 3) for v in base_psnr.mean(1)]}),
          flush=True)

    margin = model.tile_margin  # latents around each crop that decode but do not count
    inner = slice(16 * margin, 16 * (margin + args.patch))
    if not any(min(d[0].shape[-2:]) >= args.patch + 2 * margin for d in train_data):
        msg = (f"{args.data}: no training photo is {16 * (args.patch + 2 * margin)} pixels on its shorter side "
               f"(the patch size plus a margin of {16 * margin} pixels on each side)")
        raise TrainingError(msg)
    params = [p for p in model.parameters() if p.requires_grad]
    grown = {id(p) for m in model.g_s if isinstance(m, SynthesisResidual) for p in m.parameters()}
    opt = torch.optim.Adam([
        {"params": [p for p in params if id(p) in grown], "lr_scale": 1.0},
        {"params": [p for p in params if id(p) not in grown], "lr_scale": BASE_LR_SCALE},
    ], lr=args.lr)
    step, seconds, best = 0, 0.0, 0.0
    rng = np.random.default_rng(args.seed)
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["g_s"], strict=False)
        opt.load_state_dict(ck["opt"])
        step, seconds, best = ck["step"], ck["seconds"], ck["best"]
        rng = np.random.default_rng(args.seed + step)

    stop = stop_on_sigterm()
    budget = args.max_minutes * 60 - (time.monotonic() - t_start)
    total = seconds + budget  # the lr schedule runs over the whole time budget of this call
    log = open(out / "log.jsonl", "a")

    def save(path: Path, extra: dict | None = None) -> None:
        tmp = path.with_name(path.name + ".tmp")
        g_s = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("g_s.")}
        torch.save({"synthesis": True, "g_s": g_s, "opt": opt.state_dict(), "step": step, "seconds": seconds,
                    "best": best, "init": args.init, **(extra or {})}, tmp)
        tmp.replace(path)

    t_ck = t_val = time.monotonic()
    losses = []
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        seconds += now - t0
        t0 = now
        done = now - t_start >= args.max_minutes * 60 - 60 or stop["flag"] or step >= args.steps
        if done or now - t_val >= args.val_every:
            model.eval()
            p = psnrs(model, val_data, val_levels)
            gain = p - base_psnr
            v = {f"{lv:g}": round(float(gain[a].mean()), 4) for a, lv in enumerate(val_levels)}
            v["gain_db"] = round(float(gain.mean()), 4)
            log.write(json.dumps({"step": step, "seconds": round(seconds, 1), "val": v}) + "\n")
            log.flush()
            print(json.dumps({"step": step, "val": v}), flush=True)
            if v["gain_db"] > best:
                best = v["gain_db"]
                save(out / "best.pt", {"val": v})
            t_val = time.monotonic()
            t0 = t_val
        if done:
            save(last)
            break
        lr = budget_lr(args, seconds, total, step + 1)
        for gr in opt.param_groups:
            gr["lr"] = lr * gr["lr_scale"]
        ya, x = crop_batch(train_data, args.batch_size, args.patch + 2 * margin, rng)
        x = x[..., inner, inner]
        level = torch.from_numpy(rng.uniform(0, model.levels - 1, args.batch_size)).float()
        y_hat = quantize(model, ya, level)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            x_hat = model.g_s(y_hat)
        mse = ((x_hat[..., inner, inner].float() - x) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
        loss = (10 * torch.log10(mse)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if step % args.log_every == 0:
            rec = {"step": step, "seconds": round(seconds, 1), "lr": lr, "loss_db": round(float(np.mean(losses)), 4)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            losses = []
        if time.monotonic() - t_ck >= 300:
            save(last)
            t_ck = time.monotonic()
    log.close()
    return {"step": step, "best_gain_db": best}


def model_from_synthesis_checkpoint(path: str | Path, init: str | None = None) -> ResidualSynthesisModel:
    """The model of a synthesis run: its parent's weights (``init`` of the run) with the trained synthesis."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = grow_from(base_state(init or ck["init"]))
    model.load_state_dict(ck["g_s"], strict=False)
    return model.eval()
