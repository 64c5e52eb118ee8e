"""Planted anomalies: how well ``vaecodec rank``'s scores tell altered photos from clean ones.

The clean set is a folder of photos (Kodak). Every photo also gets each of five alterations,
each a kind of "odd one out" a folder of scans or photos can hold:

* ``noise``  – a square of uniform noise (a quarter of the shorter side) pasted at a random place;
* ``text``   – a white box of black text lines pasted at a random place (a label, a watermark);
* ``invert`` – the colours inverted (a negative);
* ``jpeg``   – a round trip through Pillow's JPEG at quality 5 (heavy 8×8 blocking);
* ``flat``   – one flat colour (the photo's mean): an empty frame.

Every image is scored with :func:`vaecodec.analysis.rank` in one set (clean and altered
together, as a folder would be), and for each alteration the ROC AUC of each score separates
its altered photos from the clean ones (1 = every altered photo above every clean one, 0.5 =
chance, below 0.5 = the score puts them *lower*)::

    python -m benchmarks.anomaly --dataset ../shared/datasets/kodak [--quality 75] [--out result.json]

Prints a Markdown table and JSON (written to ``--out`` when given). ``--write DIR`` instead
writes the set as PNG files (``clean-kodim01.png``, ``noise-kodim01.png``, ...) for
``vaecodec rank DIR``; ``--limit N`` uses the first N photos only.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("noise", "text", "invert", "jpeg", "flat")
SCORES = ("bpp", "mse", "score")
TEXT = ("INVOICE 2026-11-04", "Total due: 1,284.00", "Ref. 55-A/9 page 2 of 7", "lorem ipsum dolor sit amet")


def plant(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` (H×W×3 uint8) with the alteration ``kind`` (see the module docstring)."""
    h, w, _ = rgb.shape
    out = rgb.copy()
    if kind == "noise":
        s = max(1, min(h, w) // 4)
        r, c = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        out[r : r + s, c : c + s] = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    elif kind == "text":
        size = max(8, min(h, w) // 20)
        try:
            font: Any = ImageFont.load_default(size=size)
        except (TypeError, OSError):
            font = ImageFont.load_default()
        bw, bh = min(w, 14 * size), min(h, len(TEXT) * (size + 4) + 8)
        r, c = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        im = Image.fromarray(out)
        d = ImageDraw.Draw(im)
        d.rectangle([c, r, c + bw - 1, r + bh - 1], fill="white")
        for i, line in enumerate(TEXT):
            d.text((c + 4, r + 4 + i * (size + 4)), line, fill="black", font=font)
        out = np.asarray(im).copy()
    elif kind == "invert":
        out = 255 - out
    elif kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=5)
        out = np.asarray(Image.open(buf).convert("RGB")).copy()
    elif kind == "flat":
        out[:] = np.rint(rgb.reshape(-1, 3).mean(0)).astype(np.uint8)
    else:
        msg = f"unknown alteration {kind!r} (one of {', '.join(KINDS)})"
        raise ValueError(msg)
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC: the chance a positive scores above a negative (ties count half)."""
    p, n = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def planted_set(dataset: Path, seed: int = 0, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``("clean/NAME", rgb)`` for each photo of ``dataset`` and ``("KIND/NAME", altered)`` for each alteration."""
    files = sorted(p for p in dataset.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".bmp"))
    if not files:
        msg = f"{dataset}: no images"
        raise SystemExit(msg)
    rng = np.random.default_rng(seed)
    images: list[tuple[str, np.ndarray]] = []
    for f in files[:limit]:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        images.append((f"clean/{f.name}", rgb))
        images += [(f"{k}/{f.name}", plant(rgb, k, rng)) for k in KINDS]
    return images


def run(dataset: Path, quality: float, seed: int = 0, limit: int | None = None) -> dict[str, Any]:
    from vaecodec import Codec
    from vaecodec.analysis import rank

    images = planted_set(dataset, seed, limit)
    files = [n for n, _ in images if n.startswith("clean/")]
    codec = Codec()
    t0 = time.perf_counter()
    ranked = rank(images, codec=codec, quality=quality)
    seconds = time.perf_counter() - t0
    by = {r.name: r for r in ranked}
    table: dict[str, dict[str, float]] = {}
    clean = [by[n] for n, _ in images if n.startswith("clean/")]
    for k in KINDS:
        odd = [by[n] for n, _ in images if n.startswith(f"{k}/")]
        table[k] = {s: auc(np.array([getattr(r, s) for r in odd]), np.array([getattr(r, s) for r in clean]))
                    for s in SCORES}
    return {
        "dataset": str(dataset), "images": len(files), "quality": quality, "seed": seed, "model": codec.model_id,
        "seconds": round(seconds, 1), "seconds_per_image": round(seconds / len(images), 3), "auc": table,
        "ranked": [r.as_dict() for r in ranked],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = ["| alteration | AUC bpp | AUC MSE | AUC score |", "|---|---|---|---|"]
    for k, row in result["auc"].items():
        lines.append(f"| {k} | {row['bpp']:.3f} | {row['mse']:.3f} | {row['score']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--quality", type=float, default=75.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None, help="Use the first N photos only.")
    ap.add_argument("--write", type=Path, default=None, help="Write the planted set here as PNGs and stop.")
    args = ap.parse_args(argv)
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for name, rgb in planted_set(args.dataset, args.seed, args.limit):
            kind, file = name.split("/")
            Image.fromarray(rgb).save(args.write / f"{kind}-{Path(file).stem}.png")
        return
    result = run(args.dataset, args.quality, args.seed, args.limit)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "ranked"}), file=sys.stderr)


if __name__ == "__main__":
    main()
