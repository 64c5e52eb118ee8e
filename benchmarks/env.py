"""Facts about the machine and the libraries, written into every result file."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux, else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """``HEAD`` of the repository, with ``-dirty`` when tracked files are modified."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    """Versions of every library the benchmarks touch (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "compressai", "pillow", "imagecodecs", "pytorch-msssim", "scipy",
                 "matplotlib", "pytest-benchmark", "vaecodec"):
        versions[dist] = _dist_version(dist)
    try:
        from PIL import features

        versions["libjpeg-turbo (Pillow)"] = features.version_feature("libjpeg_turbo")
        versions["libwebp (Pillow)"] = features.version("webp")
        versions["libavif (Pillow)"] = features.version("avif")
        if features.check("avif"):
            from PIL import AvifImagePlugin

            versions["AV1 codecs (Pillow libavif)"] = AvifImagePlugin._avif.codec_versions()
    except Exception as exc:  # keep the report going; say what failed
        versions["Pillow features"] = f"unavailable: {exc}"
    try:
        import imagecodecs

        icv = imagecodecs.version(dict)
        for key in ("libjxl", "openjpeg", "libavif", "libwebp", "libjpeg_turbo"):
            versions[f"{key} (imagecodecs)"] = icv.get(key)
    except Exception as exc:
        versions["imagecodecs"] = f"unavailable: {exc}"
    try:
        import vaecodec

        versions["vaecodec"] = str(vaecodec.__version__)
    except Exception:  # not importable yet: keep the installed distribution's version
        pass
    return versions


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies of all CPUs, jiffies of this process and its waited-for children), Linux only."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    vals = [int(v) for v in fields]
    busy = sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # minus idle and iowait
    return busy, sum(int(v) for v in own[11:15])  # utime, stime, cutime, cstime


def other_cpu_load(seconds: float = 1.0) -> float | None:
    """CPUs kept busy by other processes, sampled now over ``seconds`` (None where /proc is missing).

    The load average lags by minutes: right after another job ends it still reads high although
    the CPUs are idle, and it counts this process too. This samples the present instead.
    """
    a = _cpu_jiffies()
    if a is None:
        return None
    time.sleep(seconds)
    b = _cpu_jiffies()
    if b is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / ticks)


def environment(command: str | None = None) -> dict[str, Any]:
    """Machine, threads, load, date, library versions and the command that produced the results."""
    try:
        import torch

        threads: int | None = torch.get_num_threads()
        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        threads, cuda = None, None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cuda_device": cuda,
        "load_average_1_5_15min": load,
        "other_cpu_load": other_cpu_load(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": library_versions(),
    }


def busy_note(env: dict[str, Any]) -> str | None:
    """Why the machine counts as busy for timings (other work on half the CPUs or more), else None.

    Uses the sampled ``other_cpu_load`` when recorded; older results only have the load average.
    """
    cpus = env.get("cpu_count") or 1
    other = env.get("other_cpu_load")
    if other is not None:
        return f"other processes kept {other:.2f} of {cpus} CPUs busy" if other > 0.5 * cpus else None
    load = env.get("load_average_1_5_15min")
    return f"load average {load[0]:.2f} on {cpus} CPUs" if load and load[0] > 0.5 * cpus else None


#: ``--malloc`` choices: the ``vaecodec`` command's setting, or glibc's defaults (a library user's).
MALLOC_SETTINGS = ("cli", "glibc")


def apply_malloc(setting: str) -> str:
    """Apply a ``--malloc`` setting to this process (see :mod:`vaecodec.allocator`); returns what took effect."""
    if setting == "cli":
        from vaecodec.allocator import keep_buffers

        return "keep_buffers" if keep_buffers() else "glibc defaults (mallopt unavailable)"
    return "glibc defaults"
