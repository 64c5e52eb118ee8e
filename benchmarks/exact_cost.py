"""Rate–distortion and speed cost of the exact (integer) entropy parameters (vaecodec.exact).

For each image and level, codes y with the rANS coder twice — with the float32 hyper-synthesis
(today's ``Codec._entropy_params``) and with :class:`~vaecodec.exact.ExactEntropyParameters` —
and reports the real coded sizes, the PSNR of the reconstructions (the means move by up to
2**-11), the share of identical table indexes, and a BD-rate over the levels. Then times both
paths on a 768×512 image (z 12×8×128 → y 48×32×192).

Usage::

    python -m benchmarks.exact_cost --checkpoint runs/main/last.pt \
        --images '../shared/datasets/kodak/kodim0[1-4].png' --levels 0 2.33 4.67 7 --threads 1
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaecodec.exact import ExactEntropyParameters, symbols_from_z_hat
from vaecodec.training.export import model_from_checkpoint
from vaecodec.model import HyperpriorModel

from .metrics import bd_rate


def _bd_rate(r1: list[float], d1: list[float], r2: list[float], d2: list[float]) -> float | None:
    """BD-rate (%) of curve 2 against curve 1 with the benchmark's method, None if undefined."""
    bd = bd_rate(r1, d1, r2, d2)
    return None if math.isnan(bd) else 100 * bd


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.clamp(0, 1) * 255).round().sub(b * 255).pow(2)).item()
    return 10 * math.log10(255**2 / mse) if mse > 0 else float("inf")


@torch.inference_mode()
def measure(model: HyperpriorModel, images: list[Path], levels: list[float]) -> dict[str, object]:
    exact = ExactEntropyParameters.from_model(model)
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    rows = []
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
        h, w = x.shape[-2:]
        f = model.downsampling_factor
        xp = torch.nn.functional.pad(x, (0, (-w) % f, 0, (-h) % f), mode="replicate")
        y_raw = model.g_a(xp)
        for level in levels:
            g, ig, hg, ihg = model.gains(torch.tensor([level]))
            y = y_raw * g
            z = model.h_a(y) * hg
            z_bytes = eb.compress(z)[0]
            z_hat = eb.decompress([z_bytes], z.shape[-2:])
            scales, fmeans = model.h_s(z_hat * ihg).chunk(2, 1)
            fidx = gc.build_indexes(scales)
            eidx, emeans = exact(symbols_from_z_hat(z_hat, eb._get_medians()), level)
            out = {"image": path.stem, "level": level, "z_bytes": len(z_bytes),
                   "index_agreement": (fidx == eidx).double().mean().item(),
                   "max_mean_diff": (fmeans - emeans).abs().max().item()}
            for name, idx, means in (("float", fidx, fmeans), ("exact", eidx, emeans)):
                y_bytes = len(gc.compress(y, idx, means=means)[0])
                y_hat = torch.round(y - means) + means
                # The coder's model: the table scale of each index, the given means.
                lik = gc._likelihood(y_hat, gc.scale_table[idx.long()], means=means)
                out[f"{name}_y_bits_est"] = float(-torch.log2(gc.likelihood_lower_bound(lik)).sum())
                x_hat = model.g_s(y_hat * ig)[..., :h, :w]
                out[f"{name}_y_bytes"] = y_bytes
                out[f"{name}_bpp"] = 8 * (y_bytes + len(z_bytes)) / (h * w)
                out[f"{name}_psnr"] = _psnr(x_hat, x)
            out["y_rate_change_pct"] = 100 * (out["exact_y_bytes"] / out["float_y_bytes"] - 1)
            out["y_bits_est_change_pct"] = 100 * (out["exact_y_bits_est"] / out["float_y_bits_est"] - 1)
            out["rate_change_pct"] = 100 * (out["exact_bpp"] / out["float_bpp"] - 1)
            out["psnr_change_db"] = out["exact_psnr"] - out["float_psnr"]
            rows.append(out)
            print(json.dumps(out))
    bd = []
    for name in sorted({r["image"] for r in rows}):
        rs = [r for r in rows if r["image"] == name]
        if len(rs) >= 2:
            bd.append(_bd_rate([r["float_bpp"] for r in rs], [r["float_psnr"] for r in rs],
                               [r["exact_bpp"] for r in rs], [r["exact_psnr"] for r in rs]))
    summary = {
        "images": len(images), "levels": levels,
        "mean_rate_change_pct": statistics.fmean(r["rate_change_pct"] for r in rows),
        "max_rate_change_pct": max(r["rate_change_pct"] for r in rows),
        "mean_y_rate_change_pct": statistics.fmean(r["y_rate_change_pct"] for r in rows),
        "mean_y_bits_est_change_pct": statistics.fmean(r["y_bits_est_change_pct"] for r in rows),
        "max_y_bits_est_change_pct": max(r["y_bits_est_change_pct"] for r in rows),
        "mean_abs_psnr_change_db": statistics.fmean(abs(r["psnr_change_db"]) for r in rows),
        "mean_psnr_change_db": statistics.fmean(r["psnr_change_db"] for r in rows),
        "min_index_agreement": min(r["index_agreement"] for r in rows),
        "bd_rate_pct_per_image": bd,
        "bd_rate_pct_mean": statistics.fmean(b for b in bd if b is not None) if any(b is not None for b in bd)
        else None,
        "formats": exact.formats(),
    }
    return {"rows": rows, "summary": summary}


@torch.inference_mode()
def timing(model: HyperpriorModel, repeats: int = 10) -> dict[str, float]:
    """Seconds for the float32 and the exact path on a 768×512 image's z (12×8), median of runs."""
    t0 = time.perf_counter()
    exact = ExactEntropyParameters.from_model(model)
    build = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    z = torch.randint(-4, 5, (1, model.N, 8, 12), generator=gen)
    med = model.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
    ihg = model.gains(torch.tensor([3.5]))[3]

    def run_float() -> None:
        scales, _ = model.h_s((z.float() + med) * ihg).chunk(2, 1)
        model.gaussian_conditional.build_indexes(scales)

    t0 = time.perf_counter()
    exact(z, 3.5)  # first call at a new level computes the decimal gains
    first = time.perf_counter() - t0
    res = {"from_model_s": build, "exact_first_call_s": first}
    for name, fn in (("float32_s", run_float), ("exact_s", lambda: exact(z, 3.5))):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        res[name] = statistics.median(ts)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="/work/runs/main/last.pt")
    ap.add_argument("--images", default="/work/shared/datasets/kodak/kodim0[1-4].png")
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 7 / 3, 14 / 3, 7.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="write the JSON result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = model_from_checkpoint(args.checkpoint).eval()
    model.update(force=True)
    images = sorted(Path(p) for p in glob.glob(args.images))
    if not images:
        raise SystemExit(f"no images match {args.images}")
    result = measure(model, images, args.levels)
    result["timing"] = timing(model)
    result["timing"]["threads"] = args.threads
    print(json.dumps(result["summary"], indent=1))
    print(json.dumps(result["timing"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
