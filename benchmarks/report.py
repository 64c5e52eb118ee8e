"""The Markdown report and the RD plots, rendered from ``results.json`` (+ ``throughput.json``).

Re-render without measuring anything: ``python -m benchmarks.report OUT_DIR``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .env import busy_note
from .metrics import bd_rate, bd_rate_polyfit, overlap
from .rd import BD_METRICS, Curve, curve_from_dict

COLORS = {"vaecodec": "#d62728", "jpeg-420": "#555555", "jpeg-444": "#aaaaaa", "webp": "#1f77b4",
          "avif-420": "#2ca02c", "avif-444": "#98c379", "jxl": "#9467bd", "jpeg2000": "#8c564b"}
REF_COLORS = ("#ff7f0e", "#e377c2", "#17becf", "#bcbd22")
#: Codecs vaecodec is compared with in the headline, in order.
HEADLINE_ANCHORS = ("jpeg-420", "jpeg-444", "webp", "avif-420", "avif-444", "jxl", "jpeg2000")
PLOTS = {"psnr": ("rd_psnr.png", "PSNR-RGB (dB)"), "ms_ssim_db": ("rd_msssim.png", "MS-SSIM (dB)")}


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.1f} %"


def _num(v: Any, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, fmt)


def plot_rd(curves: dict[str, Curve], metric: str, path: Path, title: str) -> None:
    """One RD figure: measured curves solid with markers, published references dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ylabel = PLOTS[metric][1]
    xmax = 2.0
    if "vaecodec" in curves and curves["vaecodec"].bpp:
        xmax = max(1.0, 1.25 * max(curves["vaecodec"].bpp))
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    visible: list[float] = []
    ref_i = 0
    for name, c in curves.items():
        pts = [(b, m) for b, m in zip(c.bpp, getattr(c, metric), strict=True) if math.isfinite(m)]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        visible += [y for x, y in pts if x <= xmax]
        if c.kind == "reference":
            ax.plot(xs, ys, "--", color=REF_COLORS[ref_i % len(REF_COLORS)], lw=1.4, label=c.label)
            ref_i += 1
        else:
            lw = 2.4 if name == "vaecodec" else 1.5
            ax.plot(xs, ys, "o-", color=COLORS.get(name), lw=lw, ms=3.5, label=c.label)
    if not visible:
        ax.text(0.5, 0.5, f"no finite {ylabel} values (MS-SSIM needs images of at least 161 px)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, xmax)
    if visible:
        lo, hi = min(visible), max(visible)
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def headline(curves: dict[str, Curve]) -> list[dict[str, Any]]:
    """BD-rate of vaecodec against each baseline, on PSNR and MS-SSIM dB."""
    if "vaecodec" not in curves:
        return []
    v = curves["vaecodec"]
    rows = []
    for a in HEADLINE_ANCHORS:
        if a not in curves:
            continue
        row: dict[str, Any] = {"anchor": a, "label": curves[a].label}
        for key, _ in BD_METRICS:
            value = bd_rate(curves[a].bpp, getattr(curves[a], key), v.bpp, getattr(v, key))
            row[key] = None if math.isnan(value) else 100 * value
            row[f"{key}_overlap"] = overlap(getattr(curves[a], key), getattr(v, key))
        cubic = bd_rate_polyfit(curves[a].bpp, curves[a].psnr, v.bpp, v.psnr)
        row["psnr_cubic"] = None if math.isnan(cubic) else 100 * cubic
        rows.append(row)
    return rows


def throughput_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pytest-benchmark case: MP/s from the median time of one call."""
    rows = []
    for b in bench.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "megapixels" not in info:
            continue
        med = b["stats"]["median"]
        rows.append({"codec": info["codec"], "label": info.get("label", info["codec"]), "op": info["op"],
                     "batch": info.get("batch", 1), "device": info.get("device", "cpu"),
                     "threads": info.get("threads"), "quality": info.get("quality"), "bpp": info.get("bpp"),
                     "megapixels": info["megapixels"], "median_s": med, "rounds": b["stats"]["rounds"],
                     "iqr_s": b["stats"].get("iqr"), "mp_per_s": info["megapixels"] / med if med > 0 else None,
                     "stages": info.get("stages_s_per_image")})
    return rows


def _throughput_md(bench: dict[str, Any]) -> list[str]:
    rows = throughput_rows(bench)
    if not rows:
        return ["No throughput cases ran (see the pytest output)."]
    mi = bench.get("machine_info", {})
    jpeg = {r["op"]: r["mp_per_s"] for r in rows if r["codec"] == "jpeg-420" and r["batch"] == 1}
    # on a GPU the reference is JPEG on the same device at the same batch (torchvision's nvJPEG)
    device_jpeg = {(r["op"], r["device"], r["batch"]): r["mp_per_s"] for r in rows
                   if r["codec"] == "jpeg-torchvision" and r["device"] != "cpu"}
    out = [f"CPU: {mi.get('cpu_name', '?')}, torch threads: {mi.get('torch_threads', '?')}, "
           f"GPU: {mi.get('cuda_device') or 'none (no GPU numbers)'}; load average at start "
           f"{', '.join(f'{x:.2f}' for x in mi.get('load_average', []))}; malloc: {mi.get('malloc', 'glibc defaults')}. Median of the timed rounds "
           "(one warm-up round excluded); each call encodes or decodes every listed image. × JPEG: against "
           "Pillow's JPEG 4:2:0 at batch 1 on the CPU; on a GPU, against torchvision's JPEG (nvJPEG) on the "
           "same device at the same batch.", "",
           "| codec | device | batch | threads | knob | bpp | encode MP/s | × JPEG | decode MP/s | × JPEG |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    keyed: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        keyed.setdefault((r["codec"], r["device"], r["batch"]), {})[r["op"]] = r
    for (_, device, batch), ops in keyed.items():
        any_r = next(iter(ops.values()))
        cells = []
        for op in ("encode", "decode"):
            r = ops.get(op)
            mps = r["mp_per_s"] if r else None
            ref = device_jpeg.get((op, device, batch)) if device != "cpu" else jpeg.get(op)
            ratio = mps / ref if mps and ref else None
            cells += [_num(mps, ".2f"), _num(ratio, ".3f")]
        out.append(f"| {any_r['label']} | {device} | {batch} | {any_r['threads']} | {_num(any_r['quality'], 'g')} | "
                   f"{_num(any_r['bpp'])} | " + " | ".join(cells) + " |")
    stage_rows = [r for r in rows if r["stages"]]
    if stage_rows:
        out += ["", "vaecodec by stage (mean seconds per image, batch 1, from the `stats=` dicts):", "",
                "| codec | op | device | stage | s/image | share |", "|---|---|---|---|---|---|"]
        for r in stage_rows:
            total = sum(r["stages"].values()) or math.nan
            for k, v in r["stages"].items():
                out.append(f"| {r['label']} | {r['op']} | {r['device']} | {k} | {v:.4f} | {100 * v / total:.0f} % |")
    return out


def _memory_md(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = ["One fresh process per cell: peak resident memory of the process (Linux `VmHWM`, reset just "
           "before the operation), in brackets the increase over the resident memory just before the "
           "operation (imports, model and input already loaded), then the time of that single call. "
           "Images are mirror-tiles of a dataset image. malloc: "
           + {"cli": "`keep_buffers()` (as the vaecodec command runs).", "glibc": "glibc's defaults."}.get(
               str(rows[0].get("malloc")), "glibc's defaults (run before the setting was recorded)."), "",
           "| codec | op | " + " | ".join(f"{mp:g} MP" for mp in sorted({round(r['megapixels'], 1) for r in rows}))
           + " |"]
    sizes = sorted({round(r["megapixels"], 1) for r in rows})
    out.append("|---|---|" + "---|" * len(sizes))
    keyed: dict[tuple[str, str], dict[float, dict[str, Any]]] = {}
    for r in rows:
        keyed.setdefault((r["codec"], r["op"]), {})[round(r["megapixels"], 1)] = r
    for (codec, op), by in keyed.items():
        cells = []
        for mp in sizes:
            r = by.get(mp)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(r["status"])
            else:
                cells.append(f"{r['peak_rss_mib']:.0f} MiB (+{r['op_increase_mib']:.0f}), {r['seconds']:.2f} s")
        out.append(f"| {codec} | {op} | " + " | ".join(cells) + " |")
    return out


def render(results: dict[str, Any], bench: dict[str, Any] | None) -> str:
    """The whole report as Markdown."""
    env = results["environment"]
    curves = {k: curve_from_dict(v) for k, v in results["curves"].items()}
    ds = results["dataset"]
    lines = [f"# vaecodec benchmark report: {ds['name']}", "",
             f"{len(ds['images'])} images from `{ds['path']}`; generated {env['date_utc']} on {env['cpu']} "
             f"({env['cpu_count']} logical CPUs, torch threads {env['torch_threads']}), commit "
             f"`{env.get('git_commit')}`{', quick mode (fewer points)' if results['settings'].get('quick') else ''}.",
             f"Command: `{env['command']}`.", ""]
    busy = busy_note(env)
    if busy:
        lines += [f"**Busy machine:** {busy} when the run started; "
                  "timings and memory-run durations are pessimistic. RD results do not depend on it.", ""]
    if results.get("skipped_codecs"):
        lines += ["Codecs not measured: " + "; ".join(f"{k} ({v})" for k, v in results["skipped_codecs"].items()),
                  ""]
    head = headline(curves)
    if head:
        lines += ["## Headline", "", "BD-rate of vaecodec against each codec (negative = vaecodec needs fewer "
                  "bytes for the same quality). The last column recomputes the PSNR figure with the classic "
                  "cubic-polynomial fit instead of PCHIP, as a cross-check of the interpolation.", "",
                  "| vs | PSNR-RGB | MS-SSIM (dB) | PSNR-RGB, cubic fit |", "|---|---|---|---|"]
        lines += [f"| {h['label']} | {_pct(h['psnr'])} | {_pct(h['ms_ssim_db'])} | {_pct(h['psnr_cubic'])} |"
                  for h in head]
        lines.append("")
    lines += ["## Rate–distortion", "", "![PSNR vs bpp](rd_psnr.png)", "", "![MS-SSIM vs bpp](rd_msssim.png)", ""]
    if results.get("references"):
        lines += ["Dashed lines: " + results["references_note"], ""]
    elif results.get("references_note"):
        lines += [f"Reference curves: {results['references_note']}", ""]
    lines += ["### BD-rate", "",
              "Bjøntegaard rate difference (PCHIP of ln(bpp) against the metric, integrated over the overlap "
              "of the two curves' metric ranges, shown in brackets). Negative = fewer bytes than the anchor.", ""]
    anchors = [a for a in ("jpeg-420", "vaecodec") if any(r["anchor"] == a for r in results["bd_rate"])]
    by = {(r["codec"], r["anchor"], r["metric"]): r for r in results["bd_rate"]}
    hdr = [f"vs {curves[a].label} ({m})" for a in anchors for m in ("PSNR", "MS-SSIM dB")]
    lines += ["| codec | " + " | ".join(hdr) + " |", "|---|" + "---|" * len(hdr)]
    for name, c in curves.items():
        cells = []
        for a in anchors:
            for key, _ in BD_METRICS:
                r = by.get((name, a, key))
                if r is None:
                    cells.append("anchor" if name == a else "")
                else:
                    rng = (f" ({r['overlap_lo']:.2f}–{r['overlap_hi']:.2f})" if r["overlap_lo"] is not None
                           else "")
                    cells.append(_pct(r["bd_rate_pct"]) + rng)
        lines.append(f"| {c.label} | " + " | ".join(cells) + " |")
    lines.append("")
    if results.get("crop"):
        cr = results["crop"]
        lines += ["### Side by side at one low bitrate", "",
                  f"`{cr['image']}`, crop box (x, y, w, h) = {tuple(cr['box'])}; each codec's knob chosen by "
                  f"bisection so that its file is as close as possible to {cr['target_bytes']} bytes.", "",
                  "![crops](crop.png)", "", "| codec | knob | bytes | bpp | PSNR (image) | PSNR (crop) |",
                  "|---|---|---|---|---|---|"]
        for p in cr["panels"][1:]:
            lines.append(f"| {p['label']} | {p['quality']:g} | {p['bytes']} | {p['bpp']:.3f} | "
                         f"{_num(p['psnr'], '.2f')} | {_num(p['crop_psnr'], '.2f')} |")
        lines.append("")
    lines += ["## Throughput", ""]
    lines += _throughput_md(bench) if bench else ["Not measured in this run."]
    lines += ["", "## Peak memory", ""]
    lines += _memory_md(results["memory"]) if results.get("memory") else ["Not measured in this run."]
    lines += ["", "## Codec settings", "", "| codec | knob | values | library | options |", "|---|---|---|---|---|"]
    for name, c in results["codecs"].items():
        opts = {k: v for k, v in c["options"].items() if k not in ("library", "param")}
        grid = ", ".join(f"{q:g}" for q in c["grid"])
        lines.append(f"| {c['label']} | {c['param']} | {grid} | {c['options'].get('library', '')} | "
                     f"`{json.dumps(opts)}` |")
    lines += ["", "## Dataset-average curves", "", "<details><summary>every point</summary>", "",
              "| codec | knob | bpp | PSNR-RGB | MS-SSIM | MS-SSIM dB |", "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        knobs = c.quality or [math.nan] * len(c.bpp)
        for q, b, p, m, d in zip(knobs, c.bpp, c.psnr, c.ms_ssim, c.ms_ssim_db, strict=True):
            lines.append(f"| {c.label} | {_num(q, 'g')} | {b:.4f} | {_num(p, '.3f')} | {_num(m, '.5f')} | "
                         f"{_num(d, '.3f')} |")
    lines += ["", "</details>", "", "## Method", "",
              "* bpp = 8 × (bytes of the whole encoded file, headers included) / (H × W).",
              "* PSNR-RGB on the 8-bit decoded image: MSE over all pixels and channels, peak 255, one PSNR per "
              "image; a dataset point is the mean of per-image bpp and the mean of per-image PSNR.",
              "* MS-SSIM: `pytorch_msssim.ms_ssim` on the uint8 values as float, `data_range=255` (n/a for "
              "images under 161 px); the dataset point is the mean MS-SSIM, shown in dB as "
              "−10·log10(1 − MS-SSIM).",
              "* BD-rate: exp(mean difference of PCHIP-interpolated ln(bpp) over the shared metric range) − 1.",
              "* Files: `results.json` (everything, including per-image points and options), `points.csv`, "
              "`curves.csv`, `bd_rate.csv`, `throughput.json` (pytest-benchmark).", "",
              "## Environment", "", "| library | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env["versions"].items()]
    lines.append("")
    return "\n".join(lines)


def write_report(out: Path) -> Path:
    """Draw the plots and write ``report.md`` from the JSON files in ``out``."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    bench_path = out / "throughput.json"
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
    curves = {k: curve_from_dict(v) for k, v in results["curves"].items()}
    curves.update({k: curve_from_dict(v) for k, v in results.get("references", {}).items()})
    results["curves"] = {k: v for k, v in {**results["curves"], **results.get("references", {})}.items()}
    for metric, (fname, ylabel) in PLOTS.items():
        plot_rd(curves, metric, out / fname,
                f"{results['dataset']['name']}: {ylabel} vs bpp (dataset means; dashed = published)")
    path = out / "report.md"
    path.write_text(render(results, bench))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.report OUT_DIR")
    print(write_report(Path(sys.argv[1])))
