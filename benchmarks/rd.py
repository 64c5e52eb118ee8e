"""The rate–distortion sweep: every codec × knob value × image, then dataset curves and BD-rates."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .codecs import Codec
from .metrics import bd_rate, bpp, ms_ssim, ms_ssim_db, overlap, psnr

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"})

#: BD-rate anchors, in table order; absent anchors are skipped.
ANCHORS: tuple[str, ...] = ("jpeg-420", "vaecodec", "vaecodec-refine")
#: (key in a curve, label) of the quality metrics used for BD-rates.
BD_METRICS: tuple[tuple[str, str], ...] = (("psnr", "PSNR-RGB"), ("ms_ssim_db", "MS-SSIM (dB)"))


@dataclass(frozen=True)
class Sample:
    """One test image: file stem and H×W×3 uint8 RGB pixels."""

    name: str
    pixels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass
class Point:
    """One (codec, knob value, image) measurement."""

    codec: str
    quality: float
    image: str
    height: int
    width: int
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    ms_ssim_db: float
    encode_s: float
    decode_s: float


@dataclass
class Curve:
    """A dataset-average RD curve (measured here) or a published reference curve."""

    name: str
    label: str
    kind: str  # "measured" or "reference"
    bpp: list[float]
    psnr: list[float]
    ms_ssim: list[float]
    ms_ssim_db: list[float]
    quality: list[float] = field(default_factory=list)
    source: str = ""


def load_images(folder: Path, limit: int | None = None) -> list[Sample]:
    """Every image file in ``folder`` (sorted by name), converted to 8-bit RGB."""
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"dataset folder not found: {folder}"
        raise FileNotFoundError(msg)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        files = files[:limit]
    if not files:
        msg = f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}"
        raise FileNotFoundError(msg)
    samples = []
    for p in files:
        with Image.open(p) as im:
            if im.mode not in ("RGB", "L", "P") or "transparency" in im.info:
                msg = f"{p.name}: mode {im.mode}; the benchmark takes 8-bit RGB or grey images without alpha"
                raise ValueError(msg)
            samples.append(Sample(p.stem, np.ascontiguousarray(np.asarray(im.convert("RGB")))))
    return samples


def is_kodak(samples: Sequence[Sample]) -> bool:
    """True for the 24-image Kodak set (the only set the published reference curves apply to)."""
    names = {s.name for s in samples}
    return names == {f"kodim{i:02d}" for i in range(1, 25)}


def measure(codec: Codec, sample: Sample, quality: float) -> Point:
    """Encode, decode and score one image at one knob value."""
    t0 = time.perf_counter()
    data = codec.encode(sample.pixels, quality)
    t1 = time.perf_counter()
    rec = codec.decode(data)
    t2 = time.perf_counter()
    if rec.shape != sample.pixels.shape:
        msg = f"{codec.name} q={quality} on {sample.name}: decoded {rec.shape}, expected {sample.pixels.shape}"
        raise ValueError(msg)
    s = ms_ssim(sample.pixels, rec)
    return Point(codec=codec.name, quality=float(quality), image=sample.name, height=sample.height,
                 width=sample.width, bytes=len(data), bpp=bpp(len(data), sample.height, sample.width),
                 psnr=psnr(sample.pixels, rec), ms_ssim=s, ms_ssim_db=ms_ssim_db(s),
                 encode_s=t1 - t0, decode_s=t2 - t1)


def sweep(samples: Sequence[Sample], codecs: Sequence[Codec], *, quick: bool = False,
          progress: bool = True) -> list[Point]:
    """Measure every codec at every value of its grid on every image."""
    from tqdm import tqdm

    tasks = [(c, q, s) for c in codecs for q in (c.quick_grid if quick else c.grid) for s in samples]
    points = []
    with tqdm(total=len(tasks), desc="rate-distortion", unit="enc", disable=not progress) as bar:
        for codec, q, sample in tasks:
            bar.set_postfix_str(f"{codec.name} q={q:g}", refresh=False)
            points.append(measure(codec, sample, q))
            bar.update()
    return points


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return float(np.mean(v)) if v else math.nan


def average_curves(points: Sequence[Point], labels: dict[str, str]) -> dict[str, Curve]:
    """Dataset-average curves: per knob value, mean bpp, mean PSNR and mean MS-SSIM over images.

    The MS-SSIM dB of a dataset point is computed from the mean MS-SSIM (as reference results
    are usually given). A knob value enters the curve only if every image was measured.
    """
    images = {p.image for p in points}
    groups: dict[str, dict[float, list[Point]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        groups[p.codec][p.quality].append(p)
    curves = {}
    for name, by_q in groups.items():
        c = Curve(name=name, label=labels.get(name, name), kind="measured", bpp=[], psnr=[], ms_ssim=[],
                  ms_ssim_db=[])
        for q in sorted(by_q):
            pts = by_q[q]
            if {p.image for p in pts} != images:
                continue
            m = _mean(p.ms_ssim for p in pts)
            c.quality.append(q)
            c.bpp.append(_mean(p.bpp for p in pts))
            c.psnr.append(_mean(p.psnr for p in pts))
            c.ms_ssim.append(m)
            c.ms_ssim_db.append(ms_ssim_db(m))
        curves[name] = c
    return curves


def bd_table(curves: dict[str, Curve], anchors: Sequence[str] = ANCHORS) -> list[dict[str, Any]]:
    """BD-rate of every curve against every present anchor, on PSNR and on MS-SSIM dB."""
    rows = []
    for anchor in anchors:
        if anchor not in curves or curves[anchor].kind != "measured":
            continue
        a = curves[anchor]
        for name, c in curves.items():
            if name == anchor:
                continue
            for key, label in BD_METRICS:
                am, cm = getattr(a, key), getattr(c, key)
                ov = overlap(am, cm)
                value = bd_rate(a.bpp, am, c.bpp, cm)
                rows.append({"codec": name, "label": c.label, "kind": c.kind, "anchor": anchor,
                             "anchor_label": a.label, "metric": key, "metric_label": label,
                             "bd_rate_pct": None if math.isnan(value) else 100.0 * value,
                             "overlap_lo": ov[0] if ov else None, "overlap_hi": ov[1] if ov else None})
    return rows


def points_as_dicts(points: Sequence[Point]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]


def curves_as_dicts(curves: dict[str, Curve]) -> dict[str, dict[str, Any]]:
    return {k: asdict(v) for k, v in curves.items()}


def curve_from_dict(d: dict[str, Any]) -> Curve:
    """Inverse of ``asdict`` for a curve read back from JSON (None → NaN)."""
    def f(xs: list[Any]) -> list[float]:
        return [math.nan if x is None else float(x) for x in xs]

    return Curve(name=d["name"], label=d["label"], kind=d["kind"], bpp=f(d["bpp"]), psnr=f(d["psnr"]),
                 ms_ssim=f(d["ms_ssim"]), ms_ssim_db=f(d["ms_ssim_db"]), quality=f(d.get("quality", [])),
                 source=d.get("source", ""))
