"""Fixtures for the throughput benchmarks (``pytest benchmarks --benchmark-only``).

Environment variables (set by ``python -m benchmarks``; defaults for a manual run):

* ``VAECODEC_BENCH_DATA``    folder of images (default ``assets/``; tests skip if absent)
* ``VAECODEC_BENCH_IMAGES``  how many images each timed call encodes or decodes (default 4)
* ``VAECODEC_BENCH_ROUNDS``  timed rounds per benchmark, after one warm-up round (default 3)
* ``VAECODEC_BENCH_CODECS``  comma-separated codec names (default: all)
* ``VAECODEC_BENCH_THREADS`` threads for torch and for codecs that take a thread count
  (default: torch's default)
* ``VAECODEC_BENCH_MALLOC``  ``cli`` (default): apply :func:`vaecodec.allocator.keep_buffers`
  as the ``vaecodec`` command does; ``glibc``: glibc's defaults, as a library user gets
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.env import MALLOC_SETTINGS, REPO_ROOT, apply_malloc, cpu_name, library_versions
from benchmarks.rd import Sample, load_images


def malloc_setting() -> str:
    """Apply the malloc setting the environment asks for (once per process) and name it."""
    setting = os.environ.get("VAECODEC_BENCH_MALLOC", "cli")
    if setting not in MALLOC_SETTINGS:
        raise pytest.UsageError(f"VAECODEC_BENCH_MALLOC={setting!r}: expected one of {MALLOC_SETTINGS}")
    return apply_malloc(setting)


MALLOC = malloc_setting()


def bench_threads() -> int:
    import torch

    if "VAECODEC_BENCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["VAECODEC_BENCH_THREADS"]))
    return int(torch.get_num_threads())


def data_dir() -> Path:
    return Path(os.environ.get("VAECODEC_BENCH_DATA", REPO_ROOT / "assets"))


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Add what the report needs to pytest-benchmark's machine_info."""
    import torch

    machine_info["cpu_name"] = cpu_name()
    machine_info["torch_threads"] = bench_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["load_average"] = list(os.getloadavg())
    machine_info["malloc"] = MALLOC
    machine_info["library_versions"] = library_versions()


@pytest.fixture(scope="session")
def all_images() -> list[Sample]:
    folder = data_dir()
    if not folder.is_dir():
        pytest.skip(f"no benchmark images: {folder} not found (set VAECODEC_BENCH_DATA)")
    return load_images(folder)


@pytest.fixture(scope="session")
def images(all_images: list[Sample]) -> list[Sample]:
    """The images every codec encodes and decodes in each timed call."""
    return all_images[: int(os.environ.get("VAECODEC_BENCH_IMAGES", "4"))]


@pytest.fixture(scope="session")
def batch8(all_images: list[Sample]) -> list[np.ndarray]:
    """Eight images of the most common size (repeated if the folder has fewer)."""
    size, _ = Counter(s.pixels.shape for s in all_images).most_common(1)[0]
    same = [s.pixels for s in all_images if s.pixels.shape == size]
    return [same[i % len(same)] for i in range(8)]


@pytest.fixture(scope="session")
def rounds() -> int:
    return int(os.environ.get("VAECODEC_BENCH_ROUNDS", "3"))
