"""The one command: ``python -m benchmarks --dataset DIR --out DIR``.

Runs the rate–distortion sweep, the side-by-side crop, the throughput benchmarks (pytest-
benchmark in a subprocess) and the peak-memory runs, then writes the JSON, CSV, plots and
``report.md`` into ``--out``. Nothing is cached: every run measures everything it reports.
The files are built in a sibling folder and replace those in ``--out`` when the run completes,
so a failed or stopped run leaves the previous results whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .env import MALLOC_SETTINGS, REPO_ROOT, busy_note, environment

OUTPUT_FILES = ("results.json", "points.csv", "curves.csv", "bd_rate.csv", "throughput.json", "report.md",
                "rd_psnr.png", "rd_msssim.png", "crop.png")


def jsonable(obj: Any) -> Any:
    """Replace NaN and ±inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of flat dicts as CSV (NaN/inf written as empty cells)."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(jsonable(list(rows)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    default_data = REPO_ROOT / "assets"
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=default_data,
                    help=f"folder of images (default {default_data}); the real report uses ../shared/datasets/kodak")
    ap.add_argument("--out", type=Path, required=True,
                    help="output folder (created; its files are replaced when the run completes)")
    ap.add_argument("--codecs", help="comma-separated codec names (default: all available)")
    ap.add_argument("--quick", action="store_true", help="fewer RD points, 1 timed round, no 24 MP memory run")
    ap.add_argument("--max-images", type=int, help="use only the first N images of the dataset")
    ap.add_argument("--threads", type=int, help="threads for throughput and memory runs: torch's and those of "
                    "codecs that take a thread count (default: torch's default)")
    ap.add_argument("--rd-threads", type=int, default=1,
                    help="threads for the RD sweep and the crop (default 1, pinned because AVIF's output depends "
                    "on its thread count; one thread also avoids oversubscription on a busy machine)")
    ap.add_argument("--device", default="cpu", help="device for vaecodec in the RD sweep, crop and memory runs (default cpu; "
                    "throughput covers cuda by itself when present)")
    ap.add_argument("--references", type=Path, help="folder of CompressAI Kodak JSONs "
                    "(default <repo>/../shared/reference/compressai-kodak, used for Kodak only)")
    ap.add_argument("--no-references", action="store_true")
    ap.add_argument("--crop-image", help="image (file stem) for the side-by-side crop (default kodim23 or the first)")
    ap.add_argument("--crop-bpp", type=float, default=0.15, help="target bpp of the crop comparison (default 0.15)")
    ap.add_argument("--no-crop", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--throughput-images", type=int, help="images per timed call (default 4, quick 2)")
    ap.add_argument("--rounds", type=int, help="timed rounds per throughput case (default 3, quick 1)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-sizes", help="comma-separated megapixels (default 0.4,4,24; quick 0.4,4)")
    ap.add_argument("--malloc", choices=MALLOC_SETTINGS, default="cli",
                    help="malloc settings of the throughput and memory processes: 'cli' (default) applies "
                    "vaecodec.allocator.keep_buffers() as the vaecodec command does; 'glibc' keeps glibc's defaults, "
                    "as a library user who does not opt in gets")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def run_throughput(args: argparse.Namespace, names: Sequence[str], threads: int, out: Path) -> dict[str, Any]:
    """pytest-benchmark in a subprocess; returns status facts (the JSON goes to ``out``)."""
    if "vaecodec" in names:  # JPEG on vaecodec's device, at vaecodec's batch sizes (nvJPEG on a GPU)
        names = [*names, "jpeg-torchvision"]
    env = {**os.environ, "VAECODEC_BENCH_DATA": str(args.dataset.resolve()),
           "VAECODEC_BENCH_IMAGES": str(args.throughput_images or (2 if args.quick else 4)),
           "VAECODEC_BENCH_ROUNDS": str(args.rounds or (1 if args.quick else 3)),
           "VAECODEC_BENCH_CODECS": ",".join(names), "VAECODEC_BENCH_THREADS": str(threads),
           "VAECODEC_BENCH_MALLOC": args.malloc}
    cmd = [sys.executable, "-m", "pytest", str(Path("benchmarks") / "test_throughput.py"), "--benchmark-only",
           f"--benchmark-json={out / 'throughput.json'}", "--benchmark-sort=name",
           "--benchmark-columns=median,iqr,rounds", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rs"]
    print("throughput:", " ".join(cmd[2:]), file=sys.stderr)
    rc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=False).returncode
    return {"command": " ".join(cmd[2:]), "returncode": rc}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from . import crop as crop_mod
    from .codecs import make_codecs
    from .memory import SIZES_MP, measure_memory
    from .rd import average_curves, bd_table, curves_as_dicts, is_kodak, load_images, points_as_dicts, sweep
    from .reference import DEFAULT_DIR, load_references
    from .report import write_report

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    progress = not args.no_progress
    out: Path = args.out
    # The run writes into a sibling folder and replaces out's files only when it completes, so a run
    # that fails or is stopped leaves the previous (maybe committed) results as they were.
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t_start = time.perf_counter()
    env = environment(" ".join(["python -m benchmarks", *sys.argv[1:]] if argv is None
                               else ["benchmarks.cli.main", *argv]))

    busy = busy_note(env)
    if busy:
        print(f"warning: {busy} when the run started: timings will be pessimistic (RD results are unaffected)",
              file=sys.stderr)
    samples = load_images(args.dataset, args.max_images)
    names = [n.strip() for n in args.codecs.split(",") if n.strip()] if args.codecs else None
    # The RD sweep and the crop run with --rd-threads (AVIF's output depends on its thread count).
    torch.set_num_threads(args.rd_threads)
    codecs, skipped = make_codecs(names, threads=args.rd_threads, device=args.device)
    for n, why in skipped.items():
        print(f"warning: {n} skipped: {why}", file=sys.stderr)
    results: dict[str, Any] = {
        "schema": "vaecodec-benchmarks/1",
        "environment": env,
        "dataset": {"name": args.dataset.resolve().name, "path": str(args.dataset),
                    "kodak": is_kodak(samples),
                    "images": [{"name": s.name, "height": s.height, "width": s.width} for s in samples]},
        "settings": {"quick": args.quick, "threads": threads, "rd_threads": args.rd_threads, "device": args.device,
                     "malloc": args.malloc},
        "skipped_codecs": skipped, "timing_s": {},
    }

    t0 = time.perf_counter()
    points = sweep(samples, codecs, quick=args.quick, progress=progress)
    results["timing_s"]["rate_distortion"] = time.perf_counter() - t0
    results["codecs"] = {c.name: {"label": c.label, "param": c.param, "options": c.options(),
                                  "grid": list(c.quick_grid if args.quick else c.grid)} for c in codecs}
    curves = average_curves(points, {c.name: c.label for c in codecs})

    refs: dict[str, Any] = {}
    if args.no_references:
        results["references_note"] = "disabled (--no-references)"
    elif not results["dataset"]["kodak"] and args.references is None:
        results["references_note"] = "not drawn: they are Kodak results and this dataset is not the 24 Kodak images"
    else:
        refs, why = load_references(args.references or DEFAULT_DIR)
        results["references_note"] = (
            "CompressAI's published Kodak results (" + ", ".join(c.source.split(":")[0] for c in refs.values())
            + "); their bpp counts the entropy-coded strings only (no file header) and their PSNR/MS-SSIM are "
            "measured on float reconstructions, both slightly in their favour." if refs else "")
        if why:
            results["references_note"] += f" ({why})"
            print(f"warning: reference curves: {why}", file=sys.stderr)
    results["curves"] = curves_as_dicts(curves)
    results["references"] = curves_as_dicts(refs)
    results["bd_rate"] = bd_table({**curves, **refs})
    results["points"] = points_as_dicts(points)
    save(results, work)

    if not args.no_crop:
        t0 = time.perf_counter()
        names_in = {s.name: s for s in samples}
        pick = args.crop_image or ("kodim23" if "kodim23" in names_in else samples[0].name)
        if pick not in names_in:
            msg = f"--crop-image {pick}: not in the dataset"
            raise SystemExit(msg)
        try:
            cr = crop_mod.crop_comparison(names_in[pick], codecs, args.crop_bpp)
            crop_mod.draw_crops(cr, work / "crop.png")
            results["crop"] = crop_mod.crop_facts(cr)
        except ValueError as exc:
            print(f"warning: no crop figure: {exc}", file=sys.stderr)
        results["timing_s"]["crop"] = time.perf_counter() - t0

    torch.set_num_threads(threads)
    if not args.no_throughput:
        t0 = time.perf_counter()
        results["throughput"] = run_throughput(args, [c.name for c in codecs], threads, work)
        results["timing_s"]["throughput"] = time.perf_counter() - t0

    if not args.no_memory:
        t0 = time.perf_counter()
        sizes = ([float(x) for x in args.memory_sizes.split(",")] if args.memory_sizes
                 else [s for s in SIZES_MP if not (args.quick and s > 4)])
        source = max(samples, key=lambda s: s.height * s.width).pixels
        results["memory"] = measure_memory([(c.name, c.default_quality) for c in codecs], source,
                                           sizes_mp=sizes, threads=threads, device=args.device, malloc=args.malloc,
                                           progress=progress)
        results["timing_s"]["memory"] = time.perf_counter() - t0

    results["timing_s"]["total"] = time.perf_counter() - t_start
    save(results, work)
    write_report(work)
    publish(work, out)
    print(f"wrote {out / 'report.md'} ({results['timing_s']['total']:.0f} s)", file=sys.stderr)
    return 0


def publish(work: Path, out: Path) -> None:
    """Move a completed run's files from ``work`` into ``out``; earlier outputs it did not write go."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        if (work / name).exists():
            os.replace(work / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(work)


def save(results: dict[str, Any], out: Path) -> None:
    """results.json and the CSV files."""
    (out / "results.json").write_text(json.dumps(jsonable(results), indent=1))
    write_csv(out / "points.csv", results["points"])
    curve_rows = [{"codec": name, "label": c["label"], "kind": c["kind"], "quality": q, "bpp": b, "psnr": p,
                   "ms_ssim": m, "ms_ssim_db": d}
                  for name, c in {**results["curves"], **results["references"]}.items()
                  for q, b, p, m, d in zip(c["quality"] or [None] * len(c["bpp"]), c["bpp"], c["psnr"],
                                           c["ms_ssim"], c["ms_ssim_db"], strict=True)]
    write_csv(out / "curves.csv", curve_rows)
    write_csv(out / "bd_rate.csv", results["bd_rate"])
