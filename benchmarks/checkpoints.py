"""Compare training checkpoints on the photos a run held out, against Pillow's JPEG.

An A/B test of a training change (another crop size, level weights, learning rate) starts
two runs from one checkpoint and needs one number per arm that tracks the Kodak benchmark
without touching Kodak. This tool gives, per checkpoint or weights file:

* the run's own validation (``vaecodec.training.loop.validate``: estimated bpp from the priors,
  PSNR of the rounded reconstruction) at every rung of the ladder, and its mean loss;
* the BD-rate of that curve against JPEG 4:2:0 (the benchmark's settings, quality 5..95)
  on the same held-out photos.

The bpp is estimated, not coded: the real files are a little larger (headers, rANS), so
use the figures to compare checkpoints, and the Kodak benchmark for the model card.

Usage::

    python -m benchmarks.checkpoints runs/expA/last.pt runs/expB/last.pt \
        --data ../shared/datasets/train [--raw] [--json ab.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaecodec.training.export import model_from_checkpoint
from vaecodec.training.loop import list_images, load_rgb, resolve_precision, split_train_val, validate

from .codecs import baseline_codecs
from .metrics import bd_rate, bpp, psnr


def jpeg_curve(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Mean bpp and mean PSNR of Pillow JPEG 4:2:0 over ``images`` at the benchmark's grid."""
    jpeg = next(c for c in baseline_codecs() if c.name == "jpeg-420")
    rates, psnrs = [], []
    for q in jpeg.grid:
        r, d = [], []
        for im in images:
            data = jpeg.encode(im, q)
            r.append(bpp(len(data), im.shape[0], im.shape[1]))
            d.append(psnr(im, jpeg.decode(data)))
        rates.append(float(np.mean(r)))
        psnrs.append(float(np.mean(d)))
    return rates, psnrs


def _step(path: Path) -> int | None:
    if path.suffix == ".safetensors":
        return None
    # mmap: the step is in the pickle; the tensors (read again by model_from_checkpoint) stay on disk
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["step"])


def compare(paths: list[Path], images: list[np.ndarray], *, averaged: bool = True,
            autocast: bool = True) -> list[dict[str, Any]]:
    """One record per checkpoint: step, per-level bpp/PSNR, mean loss, BD-rate vs JPEG (%)."""
    jr, jd = jpeg_curve(images)
    out = []
    for p in paths:
        model = model_from_checkpoint(p, averaged=averaged)
        # as export does: refit the factorized prior's quantiles, whose medians centre the
        # rounding of z (training fits them by the auxiliary loss, which lags when z moves)
        model.update(force=True, update_quantiles=True)
        levels = tuple(float(i) for i in range(model.levels))
        v = validate(model, images, torch.device("cpu"), levels=levels, autocast=autocast)
        rate = [v[f"{lv:g}"]["bpp"] for lv in levels]
        dist = [v[f"{lv:g}"]["psnr"] for lv in levels]
        bd = bd_rate(jr, jd, rate, dist)
        out.append({"checkpoint": str(p), "step": _step(p), "score": v["score"],
                    "bd_rate_vs_jpeg_pct": None if math.isnan(bd) else 100 * bd,
                    "bpp": rate, "psnr": dist})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.checkpoints", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="last.pt / best.pt / .safetensors files")
    ap.add_argument("--data", required=True, help="the training folder the runs used")
    ap.add_argument("--val-fraction", type=float, default=0.03, help="as given to vaecodec train")
    ap.add_argument("--raw", action="store_true", help="the live weights instead of their moving average")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="bf16 autocast or float32 (auto: bf16 where the CPU runs it fast, as training does)")
    ap.add_argument("--json", type=Path, help="also write the records here")
    args = ap.parse_args(argv)
    for p in args.checkpoints:
        if not p.is_file():
            print(f"error: {p}: no such file", file=sys.stderr)
            return 1
    _, held = split_train_val(list_images(args.data), args.val_fraction)
    if not held:
        print(f"error: {args.data}: no held-out photos at --val-fraction {args.val_fraction}", file=sys.stderr)
        return 1
    images = [load_rgb(p) for p in held]
    bf16 = resolve_precision(args.precision, torch.device("cpu")) == "bf16"
    recs = compare(args.checkpoints, images, averaged=not args.raw, autocast=bf16)
    print(f"{len(images)} held-out photos of {args.data}; {'live' if args.raw else 'averaged'} weights")
    print(f"{'checkpoint':40s} {'step':>7s} {'score':>7s} {'BD vs JPEG':>11s}  bpp/PSNR per level")
    for r in recs:
        bd = "n/a" if r["bd_rate_vs_jpeg_pct"] is None else f"{r['bd_rate_vs_jpeg_pct']:+.2f} %"
        pts = " ".join(f"{b:.3f}/{d:.2f}" for b, d in zip(r["bpp"], r["psnr"]))
        print(f"{r['checkpoint'][-40:]:40s} {r['step'] if r['step'] is not None else '-':>7} "
              f"{r['score']:7.4f} {bd:>11s}  {pts}")
    if args.json:
        args.json.write_text(json.dumps(recs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
