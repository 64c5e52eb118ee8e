"""The README's result table, rendered from a benchmark's ``results.json``.

``python -m benchmarks.readme_table benchmarks/results/kodak`` prints the Markdown table;
``tests/test_readme.py`` checks that the README carries exactly this table, so its figures
cannot drift from the measurement. Every vaecodec model the benchmark ran (``vaecodec`` is
the shipped default, ``vaecodec:<id>`` the others) gets a column; each cell is the BD-rate
(PSNR-RGB, PCHIP, :func:`benchmarks.metrics.bd_rate`) of that model against the row's codec,
computed from the stored curves.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .metrics import bd_rate

ROWS: tuple[tuple[str, str], ...] = (
    ("jpeg-420", "Pillow JPEG 4:2:0 (optimize)"),
    ("webp", "WebP"),
    ("avif-420", "AVIF 4:2:0"),
    ("jxl", "JPEG XL"),
    ("ref:compressai-bmshj2018-hyperprior_mse_cuda", "CompressAI bmshj2018-hyperprior (published)"),
    ("ref:compressai-mbt2018-mean_mse_cuda", "CompressAI mbt2018-mean (published)"),
)
BEGIN = "<!-- results table: python -m benchmarks.readme_table benchmarks/results/kodak -->"
END = "<!-- end of results table -->"


def _curve(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return results.get("curves", {}).get(name) or results.get("references", {}).get(name)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.1f} %".replace("-", "−")


def render(results: dict[str, Any]) -> str:
    curves = results.get("curves", {})
    models = [n for n in curves if n == "vaecodec" or n.startswith("vaecodec:")]
    ids = {n: (curves[n].get("model_id") or (results.get("codecs", {}).get(n, {}).get("options") or {})
               .get("model_id") or n) for n in models}
    head = "| BD-rate on Kodak (PSNR-RGB; negative = fewer bytes) | " + " | ".join(
        f"{ids[n]}{' (default)' if n == 'vaecodec' else ''}" for n in models) + " |"
    lines = [BEGIN, head, "|---|" + "---|" * len(models)]
    for name, label in ROWS:
        ref = _curve(results, name)
        if ref is None:
            continue
        cells = [_pct(bd_rate(ref["bpp"], ref["psnr"], curves[m]["bpp"], curves[m]["psnr"])) for m in models]
        lines.append(f"| vs {label} | " + " | ".join(cells) + " |")
    q = [(curves[m]["bpp"], curves[m]["psnr"]) for m in models]
    lines.append("| quality 0 → 100: bpp (PSNR) | " + " | ".join(
        f"{b[0]:.3f} ({p[0]:.1f} dB) → {b[-1]:.2f} ({p[-1]:.1f} dB)" for b, p in q) + " |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "benchmarks/results/kodak")
    print(render(json.loads((folder / "results.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
