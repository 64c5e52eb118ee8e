"""Compare weights by real coded files on the photos training held out, against JPEG and each other.

:mod:`benchmarks.checkpoints` estimates the rate from the priors, which cannot see what a
coder does differently (the checkerboard model's second pass, stream overhead). This tool
encodes and decodes the held-out photos of the training folder at the benchmark's quality
grid with each model and reports mean bpp of the whole files, mean PSNR-RGB, the BD-rate
against Pillow JPEG 4:2:0 and against the first model given. Kodak is never touched: this is
what chooses whether a checkpoint is shipped.

Usage::

    python -m benchmarks.heldout msh@14 runs/ctx/best.pt my.safetensors --data ../shared/datasets/train
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vaecodec import Codec
from vaecodec.training.loop import list_images, load_rgb, split_train_val

from .checkpoints import jpeg_curve
from .metrics import bd_rate, bpp, psnr

GRID = tuple(float(q) for q in range(0, 101, 10))


def load_codec(what: str, tmp: Path) -> Codec:
    """A shipped model id, a weights file, or a training checkpoint (exported to float16 first)."""
    if what.endswith(".safetensors"):
        return Codec(weights=what)
    if what.endswith(".pt"):
        from vaecodec.training.export import export, model_from_checkpoint

        out = tmp / (Path(what).parent.name + "-" + Path(what).stem + ".safetensors")
        export(model_from_checkpoint(what), out, model_id="heldout@0")
        return Codec(weights=str(out))
    return Codec(what)


def curve(codec: Codec, images: list[np.ndarray], grid: tuple[float, ...] = GRID) -> dict[str, Any]:
    rates, dists = [], []
    t0 = time.perf_counter()
    for q in grid:
        r, d = [], []
        for im in images:
            data = codec.encode(im, quality=q)
            r.append(bpp(len(data), im.shape[0], im.shape[1]))
            d.append(psnr(im, codec.decode(data)))
        rates.append(float(np.mean(r)))
        dists.append(float(np.mean(d)))
    return {"bpp": rates, "psnr": dists, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.heldout", description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="shipped model ids, .safetensors files, training checkpoints, "
                    "or the --json output of an earlier run (its first curve)")
    ap.add_argument("--data", required=True, help="the training folder")
    ap.add_argument("--val-fraction", type=float, default=0.03, help="as given to vaecodec train")
    ap.add_argument("--json", type=Path, help="also write the records here")
    args = ap.parse_args(argv)
    _, held = split_train_val(list_images(args.data), args.val_fraction)
    if not held:
        print(f"error: {args.data}: no held-out photos", file=sys.stderr)
        return 1
    images = [load_rgb(p) for p in held]
    jr, jd = jpeg_curve(images)
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            if m.endswith(".json"):  # a curve measured before by --json (same photos and grid)
                rec = json.loads(Path(m).read_text())[0]
                rec = {k: rec[k] for k in ("model", "bpp", "psnr", "seconds")}
            else:
                rec = {"model": m, **curve(load_codec(m, Path(tmp)), images)}
            bd = bd_rate(jr, jd, rec["bpp"], rec["psnr"])
            rec["bd_rate_vs_jpeg_pct"] = None if math.isnan(bd) else 100 * bd
            if recs:
                bd0 = bd_rate(recs[0]["bpp"], recs[0]["psnr"], rec["bpp"], rec["psnr"])
                rec["bd_rate_vs_first_pct"] = None if math.isnan(bd0) else 100 * bd0
            recs.append(rec)
            print(json.dumps({k: rec[k] for k in rec if k not in ("bpp", "psnr")}), flush=True)
    print(f"{len(images)} held-out photos of {args.data}; real files at quality {GRID[0]:g}..{GRID[-1]:g}")
    for r in recs:
        pts = " ".join(f"{b:.3f}/{d:.2f}" for b, d in zip(r["bpp"], r["psnr"]))
        vs = r.get("bd_rate_vs_first_pct")
        first = "" if vs is None else f", vs {recs[0]['model']} {vs:+.2f} %"
        print(f"{r['model'][-36:]:36s} vs JPEG {r['bd_rate_vs_jpeg_pct']:+.2f} %{first}  {pts}")
    if args.json:
        args.json.write_text(json.dumps(recs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
