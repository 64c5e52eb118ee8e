"""Side-by-side crops at one low bitrate: each codec's knob chosen to match one file size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .codecs import Codec
from .metrics import bpp, psnr
from .rd import Sample

#: Codecs shown, in order (those present are used).
CROP_CODECS: tuple[str, ...] = ("vaecodec", "jpeg-420", "webp", "avif-420")
#: Crop boxes (x, y, width, height) for known images; elsewhere a centred square is used.
DEFAULT_BOXES: dict[str, tuple[int, int, int, int]] = {"kodim23": (384, 96, 256, 256)}  # red macaw's head


def match_quality(codec: Codec, image: np.ndarray, target_bytes: int) -> tuple[float, bytes]:
    """The integer knob whose file size is closest to ``target_bytes`` (bisection; assumes
    size grows with the knob). Ties go to the smaller file."""
    lo, hi = codec.search_range
    cache: dict[int, bytes] = {}

    def enc(q: int) -> bytes:
        if q not in cache:
            cache[q] = codec.encode(image, float(q))
        return cache[q]

    if len(enc(lo)) >= target_bytes:
        return float(lo), enc(lo)
    if len(enc(hi)) <= target_bytes:
        return float(hi), enc(hi)
    while hi - lo > 1:  # invariant: size(lo) < target < size(hi)
        mid = (lo + hi) // 2
        if len(enc(mid)) <= target_bytes:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda q: (abs(len(enc(q)) - target_bytes), len(enc(q))))
    return float(best), enc(best)


def default_box(sample: Sample, side: int = 256) -> tuple[int, int, int, int]:
    """The known box for the image, else a centred square of ``side`` (clipped to the image)."""
    if sample.name in DEFAULT_BOXES:
        x, y, w, h = DEFAULT_BOXES[sample.name]
        if x + w <= sample.width and y + h <= sample.height:
            return x, y, w, h
    w, h = min(side, sample.width), min(side, sample.height)
    return (sample.width - w) // 2, (sample.height - h) // 2, w, h


def crop_comparison(sample: Sample, codecs: Sequence[Codec], target_bpp: float,
                    box: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    """Encode ``sample`` with each codec at about the same size and return crops and facts.

    The first codec (vaecodec when present) is matched to ``target_bpp``; every other codec
    is matched to the first one's actual byte count.
    """
    by_name = {c.name: c for c in codecs}
    chosen = [by_name[n] for n in CROP_CODECS if n in by_name]
    if not chosen:
        msg = f"none of {', '.join(CROP_CODECS)} is among the benchmarked codecs"
        raise ValueError(msg)
    box = box or default_box(sample)
    x, y, w, h = box
    px = sample.pixels
    target = max(1, round(target_bpp * sample.height * sample.width / 8))
    panels: list[dict[str, Any]] = [{"codec": "original", "label": "original", "crop": px[y:y + h, x:x + w]}]
    for i, codec in enumerate(chosen):
        q, data = match_quality(codec, px, target)
        if i == 0:
            target = len(data)
        rec = codec.decode(data)
        panels.append({"codec": codec.name, "label": codec.label, "quality": q, "bytes": len(data),
                       "bpp": bpp(len(data), sample.height, sample.width), "psnr": psnr(px, rec),
                       "crop_psnr": psnr(px[y:y + h, x:x + w], rec[y:y + h, x:x + w]),
                       "crop": rec[y:y + h, x:x + w]})
    return {"image": sample.name, "box": list(box), "target_bytes": target, "panels": panels}


def draw_crops(result: dict[str, Any], path: Path) -> None:
    """Write the labelled side-by-side figure as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = result["panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.9), dpi=150)
    for ax, p in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(p["crop"], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if p["codec"] == "original":
            ax.set_title(f"original\n{result['image']}, crop {result['box'][2]}×{result['box'][3]}", fontsize=9)
        else:
            ax.set_title(f"{p['label']} (q={p['quality']:g})\n{p['bytes']} B, {p['bpp']:.3f} bpp, "
                         f"{p['psnr']:.2f} dB", fontsize=9)
    fig.suptitle(f"About {result['target_bytes']} bytes per file; PSNR over the whole image", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def crop_facts(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a crop result (no pixels)."""
    return {**{k: v for k, v in result.items() if k != "panels"},
            "panels": [{k: v for k, v in p.items() if k != "crop"} for p in result["panels"]]}
