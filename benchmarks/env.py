"""Facts about the machine and the libraries, written into every result file."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
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
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": library_versions(),
    }
