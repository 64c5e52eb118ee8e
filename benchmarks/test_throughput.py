"""Encode/decode throughput of every codec on the same images (pytest-benchmark).

Run: ``python -m pytest benchmarks/test_throughput.py --benchmark-only --benchmark-json=out.json``
(``python -m benchmarks`` does this for you). Each timed call encodes or decodes all
``images``; one warm-up round is excluded. vaecodec is also timed with batch 8 (one
``encode_batch`` / ``decode_batch`` call) and per stage (the ``stats=`` dicts of batch-1
calls, averaged over the timed rounds). On CUDA the timed function ends with
``torch.cuda.synchronize()``; CUDA cases exist only when a GPU is present.

JPEG on the device vaecodec runs on: torchvision's ``encode_jpeg``/``decode_jpeg`` (nvJPEG on
CUDA, libjpeg on the CPU) at batch 1, 8 and 32, and vaecodec beside it at batch 32 on CUDA
(on the CPU batch 32 would take about half a minute per round, so batch 8 is the largest
there). The CPU path of the same code runs in ``tests/test_bench_device_jpeg.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.codecs import Codec, TorchvisionJpeg, VaecodecCodec, _other_models, baseline_codecs
from benchmarks.conftest import bench_threads
from benchmarks.metrics import bpp
from benchmarks.rd import Sample

THREADS = bench_threads()
_WANTED = {n.strip() for n in os.environ.get("VAECODEC_BENCH_CODECS", "").split(",") if n.strip()}
BASELINES = {c.name: c for c in baseline_codecs(THREADS) if not _WANTED or c.name in _WANTED}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
RUN_VAECODEC = not _WANTED or "vaecodec" in _WANTED
RUN_DEVICE_JPEG = not _WANTED or "jpeg-torchvision" in _WANTED
DEVICE_BATCHES = (1, 8, 32)
#: The shipped default (None) and, at batch 1, every other shipped model (an older generation).
MODELS = [None, *(m for m in _other_models() if not _WANTED or f"vaecodec:{m}" in _WANTED)]

_vaecodec: dict[tuple[str, str | None], VaecodecCodec] = {}
_encoded: dict[tuple[str, str], list[bytes]] = {}


def vaecodec_on(device: str, model_id: str | None = None) -> VaecodecCodec:
    if (device, model_id) not in _vaecodec:
        try:
            _vaecodec[(device, model_id)] = VaecodecCodec(device=device, model_id=model_id)
        except Exception as exc:
            pytest.skip(f"vaecodec unavailable: {type(exc).__name__}: {exc}")
    return _vaecodec[(device, model_id)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _run(benchmark: Any, fn: Callable[[], Any], rounds: int) -> Any:
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


def _info(benchmark: Any, codec: Codec, op: str, batch: int, device: str, quality: float,
          pictures: list[np.ndarray], datas: list[bytes]) -> None:
    opts = codec.options()
    threads = opts.get("torch_threads") or opts.get("max_threads") or opts.get("numthreads") or 1
    benchmark.extra_info.update({
        "codec": codec.name, "label": codec.label, "op": op, "batch": batch, "device": device,
        "threads": threads, "quality": quality, "images": len(pictures),
        "megapixels": sum(p.shape[0] * p.shape[1] for p in pictures) / 1e6,
        "bpp": float(np.mean([bpp(len(d), p.shape[0], p.shape[1]) for d, p in zip(datas, pictures, strict=True)])),
        "options": opts,
    })


def _encoded_once(codec: Codec, key: str, pictures: list[np.ndarray]) -> list[bytes]:
    if (codec.name, key) not in _encoded:
        _encoded[(codec.name, key)] = [codec.encode(p, codec.default_quality) for p in pictures]
    return _encoded[(codec.name, key)]


@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline(benchmark: Any, images: list[Sample], rounds: int, name: str, op: str) -> None:
    codec = BASELINES[name]
    benchmark.group = f"{op}-cpu"
    pictures = [s.pixels for s in images]
    q = codec.default_quality
    datas = _encoded_once(codec, "images", pictures)
    if op == "encode":
        _run(benchmark, lambda: [codec.encode(p, q) for p in pictures], rounds)
    else:
        _run(benchmark, lambda: [codec.decode(d) for d in datas], rounds)
    _info(benchmark, codec, op, 1, "cpu", q, pictures, datas)


@pytest.mark.skipif(not RUN_VAECODEC, reason="vaecodec not selected")
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m or "default")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_vaecodec_batch1(benchmark: Any, images: list[Sample], rounds: int, op: str, device: str,
                         model: str | None) -> None:
    codec = vaecodec_on(device, model)
    benchmark.group = f"{op}-{device}"
    pictures = [s.pixels for s in images]
    q = codec.default_quality
    datas = _encoded_once(codec, f"images-{device}", pictures)
    per_round: list[list[dict[str, float]]] = []

    def run() -> None:
        stats = [{} for _ in pictures]
        if op == "encode":
            for p, st in zip(pictures, stats, strict=True):
                codec.encode(p, q, stats=st)
        else:
            for d, st in zip(datas, stats, strict=True):
                codec.decode(d, stats=st)
        _sync(device)
        per_round.append(stats)

    _run(benchmark, run, rounds)
    _info(benchmark, codec, op, 1, device, q, pictures, datas)
    timed = [st for r in per_round[1:] for st in r]  # drop the warm-up round
    stages = sorted({k for st in timed for k in st})
    benchmark.extra_info["stages_s_per_image"] = {k: float(np.mean([st.get(k, 0.0) for st in timed]))
                                                  for k in stages}


def _batched(benchmark: Any, codec: Any, pictures: list[np.ndarray], rounds: int, op: str, device: str,
             datas: list[bytes] | None = None) -> None:
    """Time one ``encode_batch``/``decode_batch`` call over ``pictures`` on ``device``."""
    benchmark.group = f"{op}-{device}"
    q = codec.default_quality
    if datas is None:
        datas = codec.encode_batch(pictures, q)

    def run() -> None:
        if op == "encode":
            codec.encode_batch(pictures, q)
        else:
            codec.decode_batch(datas)
        _sync(device)

    _run(benchmark, run, rounds)
    _info(benchmark, codec, op, len(pictures), device, q, pictures, datas)


@pytest.mark.skipif(not RUN_VAECODEC, reason="vaecodec not selected")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_vaecodec_batch8(benchmark: Any, batch8: list[np.ndarray], rounds: int, op: str, device: str) -> None:
    codec = vaecodec_on(device)
    key = ("vaecodec", f"batch8-{device}")
    if key not in _encoded:
        _encoded[key] = codec.encode_batch(batch8, codec.default_quality)
    _batched(benchmark, codec, batch8, rounds, op, device, _encoded[key])


@pytest.mark.skipif(not RUN_DEVICE_JPEG, reason="jpeg-torchvision not selected")
@pytest.mark.parametrize("batch", DEVICE_BATCHES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_device_jpeg(benchmark: Any, batch8: list[np.ndarray], rounds: int, op: str, device: str,
                     batch: int) -> None:
    """JPEG on the same device as vaecodec, one batched call of ``batch`` same-size images."""
    pictures = [batch8[i % len(batch8)] for i in range(batch)]
    _batched(benchmark, TorchvisionJpeg(device), pictures, rounds, op, device)


@pytest.mark.skipif(not RUN_VAECODEC or not torch.cuda.is_available(), reason="batch 32 is timed on CUDA only")
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_vaecodec_batch32_cuda(benchmark: Any, batch8: list[np.ndarray], rounds: int, op: str) -> None:
    _batched(benchmark, vaecodec_on("cuda"), [batch8[i % len(batch8)] for i in range(32)], rounds, op, "cuda")
