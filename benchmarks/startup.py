"""Start-up time: wall time of ``vaecodec encode`` on a 64×64 PNG and of ``import vaecodec.codec``.

Each round runs both commands in fresh processes, so every round pays the interpreter start,
the imports (torch, the parts of CompressAI in :mod:`vaecodec._compressai`), loading the
model and, for ``encode``, the coding of a small image, which is all start-up. The 64×64
image is a crop of the sample photo shipped in the package. The target (issue 30) is 2.5 s of
wall time for the encode. A last child lists which of the heavy optional modules the import
brought in (``torch_geometric``, ``torch._dynamo``, ``scipy.stats``): none of them should be.

Prints JSON (and writes it to ``--out`` when given); not a timed test::

    python -m benchmarks.startup [--rounds 5] [--out benchmarks/results/startup.json]

The command is the ``vaecodec`` script installed beside the running Python, else
``python -m vaecodec``. On a busy machine (see ``busy`` in the output) times are longer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .env import REPO_ROOT, busy_note, environment

#: issue 30: ``vaecodec encode`` of a 64×64 PNG within this many seconds of wall time
TARGET_ENCODE_S = 2.5

#: modules the codec never needs, whose import costs seconds
HEAVY_MODULES = ("torch_geometric", "torch._dynamo", "scipy.stats", "compressai.datasets",
                 "compressai.registry")


def vaecodec_command() -> list[str]:
    """The ``vaecodec`` console script of this Python's environment, else ``python -m vaecodec``."""
    script = Path(sys.executable).parent / "vaecodec"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vaecodec"]


def make_png(path: Path, size: int = 64) -> Path:
    """A ``size``×``size`` crop of the sample photo shipped in the package, as PNG."""
    from PIL import Image

    sample = REPO_ROOT / "vaecodec" / "samples" / "coffee.png"
    with Image.open(sample) as im:
        im.convert("RGB").crop((0, 0, size, size)).save(path)
    return path


def wall_time(cmd: list[str]) -> float:
    """Seconds of wall time of one run of ``cmd`` (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    return time.perf_counter() - start


def heavy_modules_imported() -> list[str]:
    """Which of :data:`HEAVY_MODULES` ``import vaecodec.codec`` brings into a fresh process."""
    code = ("import json, sys, vaecodec.codec; "
            f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=REPO_ROOT)
    return json.loads(out.stdout)


def _summary(times: list[float]) -> dict[str, Any]:
    return {"seconds": [round(t, 3) for t in times], "min_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3)}


def run(rounds: int = 5) -> dict[str, Any]:
    """Time both commands ``rounds`` times (interleaved) and return the report."""
    encode_times: list[float] = []
    import_times: list[float] = []
    encode = vaecodec_command()
    import_cmd = [sys.executable, "-c", "import vaecodec.codec"]
    with tempfile.TemporaryDirectory() as tmp:
        png = make_png(Path(tmp) / "start64.png")
        out = Path(tmp) / "start64.vae"
        encode_cmd = [*encode, "encode", str(png), "-o", str(out), "--force"]
        for _ in range(rounds):
            encode_times.append(wall_time(encode_cmd))
            import_times.append(wall_time(import_cmd))
        size = out.stat().st_size
    env = environment()
    enc = _summary(encode_times)
    return {
        "benchmark": "startup",
        "encode_64x64": {"command": " ".join([Path(encode[0]).name, *encode[1:], "encode", "IN.png",
                                              "-o", "OUT.vae", "--force"]),
                         **enc, "bytes": size, "target_s": TARGET_ENCODE_S,
                         "within_target": enc["median_s"] <= TARGET_ENCODE_S},
        "import_codec": {"command": "python -c 'import vaecodec.codec'", **_summary(import_times)},
        "heavy_modules_imported": heavy_modules_imported(),
        "busy": busy_note(env),
        "environment": env,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    report = run(max(1, args.rounds))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
