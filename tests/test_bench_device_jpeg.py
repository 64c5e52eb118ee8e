"""The throughput benchmark's JPEG-on-the-device cases run on the CPU path (the GPU path is the same code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, natural_like

pytest.importorskip("torchvision")
pytest.importorskip("pytest_benchmark")


def test_torchvision_jpeg_round_trips_a_batch():
    from benchmarks.codecs import TorchvisionJpeg
    from benchmarks.metrics import psnr

    codec = TorchvisionJpeg("cpu")
    images = [natural_like(48, 64, seed=s) for s in range(3)]
    datas = codec.encode_batch(images, 90)
    assert [d[:2] for d in datas] == [b"\xff\xd8"] * 3  # JPEG files
    back = codec.decode_batch(datas)
    assert [b.shape for b in back] == [im.shape for im in images] and back[0].dtype == np.uint8
    assert all(psnr(a, b) > 30 for a, b in zip(images, back, strict=True))
    assert len(codec.encode(images[0], 20)) < len(datas[0])  # the quality knob is passed on


def test_device_jpeg_cases_run_on_the_cpu_and_reach_the_report(tmp_path):
    from benchmarks.report import _throughput_md

    data = tmp_path / "imgs"
    data.mkdir()
    for s in range(2):
        Image.fromarray(natural_like(64, 96, seed=s)).save(data / f"{s}.png")
    out = tmp_path / "bench.json"
    env = {**os.environ, "VAECODEC_BENCH_DATA": str(data), "VAECODEC_BENCH_CODECS": "jpeg-torchvision,jpeg-420",
           "VAECODEC_BENCH_ROUNDS": "1", "VAECODEC_BENCH_IMAGES": "2"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/test_throughput.py",
                        "-k", "device_jpeg or baseline", "--benchmark-only", f"--benchmark-json={out}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    bench = json.loads(out.read_text())
    cases = {(b["extra_info"]["codec"], b["extra_info"]["op"], b["extra_info"]["batch"], b["extra_info"]["device"])
             for b in bench["benchmarks"]}
    for op in ("encode", "decode"):
        for batch in (1, 8, 32):
            assert ("jpeg-torchvision", op, batch, "cpu") in cases
    table = "\n".join(_throughput_md(bench))
    assert "| JPEG (torchvision, libjpeg) | cpu | 32 |" in table
