"""Peak memory of one encode or decode, each in a fresh subprocess.

The child imports the codec and loads its input, then runs the operation once and reports
the process's peak resident set size and the increase the operation caused over the RSS
just before it (the part that scales with the image). On Linux the peak is ``VmHWM`` from
``/proc/self/status``, reset to the current RSS right before the operation by writing 5 to
``/proc/self/clear_refs``; ``ru_maxrss`` is not used there because Linux carries it over
from the parent across fork and exec (a child of a 1 GiB parent starts at 1 GiB). Elsewhere
``ru_maxrss`` is the fallback. The parent watches the child's RSS and stops it above a
limit, so a huge image can never push the machine into the OOM killer. Test images of 0.4, 4 and 24 MP are
made by mirror-tiling a dataset image, which keeps the texture of a real photograph.

Child usage (internal): ``python -m benchmarks.memory CODEC encode|decode IN OUT --quality Q``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .env import MALLOC_SETTINGS, REPO_ROOT, apply_malloc

SIZES_MP: tuple[float, ...] = (0.4, 4.0, 24.0)


def tiled_image(source: np.ndarray, megapixels: float) -> np.ndarray:
    """An image of about ``megapixels`` (3:2, sides multiple of 16) mirror-tiled from ``source``."""
    w = max(16, 16 * round((megapixels * 1e6 * 1.5) ** 0.5 / 16))
    h = max(16, 16 * round(w / 1.5 / 16))
    reps = (-(-h // source.shape[0]), -(-w // source.shape[1]))
    rows = [np.concatenate([source if (i + j) % 2 == 0 else source[:, ::-1] for j in range(reps[1])], axis=1)
            for i in range(reps[0])]
    rows = [r if i % 2 == 0 else r[::-1] for i, r in enumerate(rows)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:h, :w])


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _available_kb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_child(args: Sequence[str], limit_kb: int | None, timeout: float) -> dict[str, Any]:
    """Run one child measurement; stop it (by its own pid) if it exceeds ``limit_kb`` or ``timeout``."""
    cmd = [sys.executable, "-m", "benchmarks.memory", *args]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    stopped = None
    while proc.poll() is None:
        rss = _rss_kb(proc.pid)
        if limit_kb is not None and rss is not None and rss > limit_kb:
            stopped = f"stopped: RSS above the {limit_kb // 1024} MiB limit"
        elif time.monotonic() - start > timeout:
            stopped = f"stopped: longer than {timeout:.0f} s"
        if stopped:
            proc.kill()
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if stopped:
        return {"status": stopped}
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"status": f"failed: {tail[0]}"}
    return {"status": "ok", **json.loads(out.strip().splitlines()[-1])}


def measure_memory(codecs: Sequence[tuple[str, float]], source: np.ndarray, *,
                   sizes_mp: Sequence[float] = SIZES_MP, threads: int = 1, device: str = "cpu", malloc: str = "cli",
                   timeout: float = 900.0, limit_fraction: float = 0.6,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Peak memory of encode and decode for each (codec name, knob value) and image size."""
    from tqdm import tqdm

    avail = _available_kb()
    limit_kb = int(avail * limit_fraction) if avail else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vaecodec-mem-") as tmp, \
            tqdm(total=2 * len(codecs) * len(sizes_mp), desc="peak memory", unit="run",
                 disable=not progress) as bar:
        for mp in sizes_mp:
            img = tiled_image(source, mp)
            img_path = Path(tmp) / f"{mp:g}mp.npy"
            np.save(img_path, img)
            for name, q in codecs:
                enc_path = Path(tmp) / f"{name}-{mp:g}.bin"
                common = ["--quality", str(q), "--threads", str(threads), "--device", device, "--malloc", malloc]
                for op, src, dst in (("encode", img_path, enc_path), ("decode", enc_path, Path(tmp) / "x.npy")):
                    bar.set_postfix_str(f"{name} {op} {mp:g} MP", refresh=False)
                    if op == "decode" and not enc_path.exists():
                        res: dict[str, Any] = {"status": "skipped: encode failed"}
                    else:
                        res = run_child([name, op, str(src), str(dst), *common], limit_kb, timeout)
                    rows.append({"codec": name, "op": op, "quality": q, "megapixels": img.shape[0] * img.shape[1] / 1e6,
                                 "height": img.shape[0], "width": img.shape[1], "threads": threads,
                                 "device": device if name == "vaecodec" else "cpu", "malloc": malloc, **res})
                    bar.update()
            img_path.unlink()
    return rows


def _child(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    ap.add_argument("codec")
    ap.add_argument("op", choices=["encode", "decode"])
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--quality", type=float, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--malloc", choices=MALLOC_SETTINGS, default="cli")
    a = ap.parse_args(argv)
    malloc = apply_malloc(a.malloc)
    from .codecs import make_codecs

    if a.codec == "vaecodec":
        import torch

        torch.set_num_threads(a.threads)
    (codec,), _ = make_codecs([a.codec], threads=a.threads, device=a.device)
    data_in: Any = np.load(a.input) if a.op == "encode" else a.input.read_bytes()
    cuda = a.codec == "vaecodec" and a.device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    hwm = _reset_peak()
    before = _status_kb("VmRSS") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = codec.encode(data_in, a.quality) if a.op == "encode" else codec.decode(data_in)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert before is not None and peak is not None
    if a.op == "encode":
        a.output.write_bytes(result)
    facts = {"rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024, "op_increase_mib": (peak - before) / 1024,
             "peak_source": "VmHWM" if hwm else "ru_maxrss", "seconds": seconds, "malloc_applied": malloc,
             "bytes": len(result) if a.op == "encode" else None,
             "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
