"""Training the checkerboard context of :class:`~vaecodec.model.CheckerboardModel` on cached latents.

The transforms of a trained hyperprior model are kept frozen; only the context convolution
and the entropy-parameters network learn. The analysis transform's output does not depend on
the level (the level only scales it by the gain), so it is computed once per training photo
(and once for its mirror image) and cached; a training step then runs only the
hyper-analysis, the hyper-synthesis (both frozen, no gradient) and the small context networks
on random crops of the cached latents at random levels. The hyper-synthesis' parameters
for the anchors, and so the anchors' bits, do not change; the objective is the relative
number of y bits of each crop, ``bits(context) / bits(hyperprior)``, averaged over the
batch, which weighs every rate alike, as the Bjøntegaard rate does.

The decoded image does not depend on the context except through the means of the
non-anchors, which only move where inside its quantization bin each latent is rounded;
validation measures the real rate saving (rounded latents, discrete likelihoods) on the
held-out photos.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import TrainingError
from ..model import CheckerboardModel, checkerboard_mask, fast_bf16
from .budget import budget_lr, stop_on_sigterm
from .loop import list_images, load_init_state, load_rgb, split_train_val

CONTEXT_PARAMS = ("context.", "entropy_parameters.")


def base_state(init: str) -> dict[str, Tensor]:
    if init.endswith(".safetensors"):
        from ..weights import spec_from_file

        spec_from_file(Path(init))  # a clear error for a file that is not vaecodec weights
    return load_init_state(init)


def grow_from(state: dict[str, Tensor]) -> CheckerboardModel:
    """A checkerboard model whose hyperprior part is ``state`` (context at zero: same function).

    ``state`` may also be a checkerboard model's own (training then continues its context).
    """
    N, M, levels = state["g_a.0.weight"].shape[0], state["g_a.6.weight"].shape[0], state["gain"].shape[0]
    model = CheckerboardModel(N, M, levels)
    state, _ = upgrade_context_state(state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(CONTEXT_PARAMS)]
    if bad or unexpected:
        msg = f"weights do not fit: missing {bad[:4]}, unexpected {list(unexpected)[:4]}"
        raise ValueError(msg)
    return model


@torch.no_grad()
def photos(files: list[Path], *, flips: bool) -> Iterator[tuple[Tensor, np.ndarray]]:
    """Each photo cropped to a multiple of 16 pixels, as a float 1×3×H×W tensor and as its uint8
    pixels (H×W×3, the mirror image a view), then its mirror image too with ``flips``."""
    for i, f in enumerate(files):
        im = load_rgb(f)
        h, w = (im.shape[0] // 16) * 16, (im.shape[1] // 16) * 16
        im = im[:h, :w]
        x = torch.from_numpy(im).permute(2, 0, 1)[None].float().div(255)
        yield x, im
        if flips:
            yield x.flip(-1), im[:, ::-1]
        if (i + 1) % 50 == 0:
            print(json.dumps({"cached": i + 1, "of": len(files)}), flush=True)


def cache_latents(model: CheckerboardModel, files: list[Path], *, flips: bool) -> list[Tensor]:
    """g_a of each photo (cropped to a multiple of 16 pixels), float32 1×M×h×w; mirrored copies too."""
    return [model.g_a(x).float() for x, _ in photos(files, flips=flips)]


def y_bits(model: CheckerboardModel, y: Tensor, scales: Tensor, means: Tensor) -> Tensor:
    """-log2 of the Gaussian likelihood of ``y`` (noisy or rounded) per element."""
    gc = model.gaussian_conditional
    lik = gc._likelihood(y, gc.lower_bound_scale(scales), means)
    return -torch.log2(lik.clamp_min(1e-9))


def crop_windows(latents: list[Tensor], n: int, size: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``n`` random size×size latent crops as (photo index, top row, left column), drawn among
    the photos that are large enough."""
    elig = [k for k, t in enumerate(latents) if min(t.shape[-2:]) >= size]
    out = []
    for _ in range(n):
        k = elig[rng.integers(len(elig))]
        i, j = rng.integers(latents[k].shape[-2] - size + 1), rng.integers(latents[k].shape[-1] - size + 1)
        out.append((k, int(i), int(j)))
    return out


def crop_batch(latents: list[Tensor], n: int, size: int, rng: np.random.Generator) -> Tensor:
    return torch.cat([latents[k][..., i : i + size, j : j + size] for k, i, j in crop_windows(latents, n, size, rng)])


def step_loss(model: CheckerboardModel, ya: Tensor, level: Tensor, autocast: bool) -> tuple[Tensor, Tensor]:
    """Mean relative y rate of a batch of ungained latents ``ya`` (and the mean saving, for logs)."""
    g = model.gains(level)[0]
    with torch.no_grad():
        y = ya * g
        _, scales, means = model.hyper_params(y, level, noise=False)
        scales, means = model.coded_params(scales, means)
        y_t = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        base = y_bits(model, y_t, scales, means)
        anchor = checkerboard_mask(*y.shape[-2:], anchors=True)
        y_hat_a = (torch.round(y - means) + means) * anchor
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        s_na, m_na = model.context_params(y_hat_a, scales, means, level)
    new = y_bits(model, y_t, s_na.float(), m_na.float())
    na = 1 - anchor
    base_tot = base.sum((1, 2, 3))
    new_tot = (base * anchor).sum((1, 2, 3)) + (new * na).sum((1, 2, 3))
    ratio = new_tot / base_tot
    return ratio.mean(), 1 - ratio.detach().mean()


@torch.no_grad()
def validate(model: CheckerboardModel, latents: list[Tensor], levels: tuple[float, ...]) -> dict:
    """Estimated bits with rounded latents: hyperprior alone against the context, per level.

    Each photo's latents are cropped to whole hyper-latent positions (multiples of 4).
    """
    model.eval()
    res: dict[str, Any] = {}
    savings = []
    for lv in levels:
        level = torch.full((1,), lv)
        g = model.gains(level)[0]
        b_base = b_new = 0.0
        per = []
        for ya in latents:
            hy, wy = ya.shape[-2] // 4 * 4, ya.shape[-1] // 4 * 4  # whole z positions
            ya = ya[..., :hy, :wy]
            px = hy * wy * 256
            y = ya * g
            z_lik, scales, means = model.hyper_params(y, level, noise=False)
            scales, means = model.coded_params(scales, means)
            zb = float(-torch.log2(z_lik).sum())
            y_hat = torch.round(y - means) + means
            base = float(y_bits(model, y_hat, scales, means).sum()) + zb
            s, m = model.latent_params(y, scales, means, level)
            y_hat2 = torch.round(y - m) + m
            new = float(y_bits(model, y_hat2, s, m).sum()) + zb
            b_base += base / px
            b_new += new / px
            per.append(1 - new / base)
        n = len(latents)
        res[f"{lv:g}"] = {"bpp_hyperprior": b_base / n, "bpp_context": b_new / n, "saving": float(np.mean(per))}
        savings.append(float(np.mean(per)))
    res["saving"] = float(np.mean(savings))
    return res


def upgrade_context_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """A context trained when it read the anchors only, grown to read their residuals too.

    The residuals' weights start at zero, so the function is kept. Returns the state and
    whether it changed (an optimizer state saved with it no longer fits).
    """
    w = state.get("context.weight")
    if w is None or w.shape[1] == 2 * w.shape[0]:
        return state, False
    out = dict(state)
    out["context.weight"] = torch.cat([w, torch.zeros_like(w)], 1)
    return out, True


def context_state(model: CheckerboardModel) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(CONTEXT_PARAMS)}


def train(args: argparse.Namespace) -> dict:
    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = grow_from(base_state(args.init))
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(CONTEXT_PARAMS))
    model.eval()
    autocast = {"bf16": True, "fp32": False}.get(args.precision, fast_bf16("cpu"))

    files = list_images(args.data)
    train_files, val_files = split_train_val(files, getattr(args, "val_fraction", 0.03))
    if not val_files:
        msg = f"{args.data}: no photos held out for validation (too few files for the validation fraction)"
        raise TrainingError(msg)
    cache = out / "latents.pt"
    if cache.exists():
        c = torch.load(cache, weights_only=False)
        train_lat, val_lat = c["train"], c["val"]
    else:
        train_lat = cache_latents(model, train_files, flips=True)
        val_lat = cache_latents(model, val_files, flips=False)
        tmp = cache.with_name("latents.pt.tmp")
        torch.save({"train": train_lat, "val": val_lat}, tmp)
        tmp.replace(cache)
    print(json.dumps({"cache_s": round(time.monotonic() - t_start, 1), "train": len(train_lat),
                      "val": len(val_lat)}), flush=True)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    step, seconds, best, warm_start = 0, 0.0, -math.inf, 0
    rng = np.random.default_rng(args.seed)
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        state, grown = upgrade_context_state(ck["context"])
        model.load_state_dict(state, strict=False)
        step, seconds, best = ck["step"], ck["seconds"], ck["best"]
        if grown:  # a fresh Adam, with its own warm-up, for the grown context
            warm_start = step
        else:
            opt.load_state_dict(ck["opt"])
            warm_start = ck.get("warm_start", 0)
        rng = np.random.default_rng(args.seed + step)

    stop = stop_on_sigterm()
    budget = args.max_minutes * 60 - (time.monotonic() - t_start)
    total = seconds + budget  # the lr schedule runs over the whole time budget of this call
    log = open(out / "log.jsonl", "a")

    def save(path: Path, extra: dict | None = None) -> None:
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"context": context_state(model), "opt": opt.state_dict(), "step": step,
                    "seconds": seconds, "best": best, "warm_start": warm_start, "init": args.init,
                    **(extra or {})}, tmp)
        tmp.replace(path)

    val_levels = (0.0, 2.0, 4.0, 6.0, 8.0)
    t_ck = t_val = time.monotonic()
    losses, sav = [], []
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        seconds += now - t0
        t0 = now
        done = now - t_start >= args.max_minutes * 60 - 30 or stop["flag"] or step >= args.steps
        if done or now - t_val >= args.val_every:
            v = validate(model, val_lat, val_levels)
            rec = {"step": step, "seconds": round(seconds, 1), "val": v}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps({"step": step, "val_saving": round(v["saving"], 5)}), flush=True)
            if v["saving"] > best:
                best = v["saving"]
                save(out / "best.pt", {"val": v})
            t_val = time.monotonic()
            t0 = t_val
        if done:
            save(last)
            break
        lr = budget_lr(args, seconds, total, step + 1 - warm_start)
        for gr in opt.param_groups:
            gr["lr"] = lr
        ya = crop_batch(train_lat, args.batch_size, args.patch, rng)
        level = torch.from_numpy(rng.uniform(0, model.levels - 1, args.batch_size)).float()
        model.train()
        loss, s = step_loss(model, ya, level, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        model.eval()
        step += 1
        losses.append(float(loss.detach()))
        sav.append(float(s))
        if step % args.log_every == 0:
            rec = {"step": step, "seconds": round(seconds, 1), "lr": lr, "loss": float(np.mean(losses)),
                   "saving": float(np.mean(sav))}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            losses, sav = [], []
        if time.monotonic() - t_ck >= 300:
            save(last)
            t_ck = time.monotonic()
    log.close()
    return {"step": step, "best": best}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--out", required=True)
    p.add_argument("--init", default="shipped")
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=16, help="latent crop side (16 = 256 pixels)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--val-every", type=float, default=600.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.03)
    p.add_argument("--max-minutes", type=float, required=True)
    print(json.dumps(train(p.parse_args(argv))))


if __name__ == "__main__":
    main()


def model_from_context_checkpoint(path: str | Path, init: str | None = None) -> CheckerboardModel:
    """The checkerboard model of a context run: its base weights (``init`` of the run) plus the context."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = grow_from(base_state(init or ck["init"]))
    model.load_state_dict(upgrade_context_state(ck["context"])[0], strict=False)
    return model.eval()
