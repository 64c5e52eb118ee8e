"""Golden test vectors: committed .vae files must decode to frozen pixel hashes on any machine.

One folder per shipped model (``tests/data/golden/<model>/``): every model a release ships
keeps decoding the files its predecessors wrote. The files were encoded with that model's
weights; they are decoded with ``deterministic=True`` (exact entropy parameters, float64
synthesis), so the hashes hold across CPUs, thread counts and devices. Regenerate the
default model's folder only on purpose, together with a format or model version bump:

    VAECODEC_REGENERATE=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import ASSETS, REPO

GOLDEN = REPO / "tests" / "data" / "golden"
MODELS = sorted(p.name for p in GOLDEN.iterdir() if (p / "expected.json").is_file())


def cases() -> dict[str, tuple[np.ndarray | Image.Image, float]]:
    coffee = Image.open(ASSETS / "coffee.png").convert("RGB")
    crop = coffee.crop((200, 100, 296, 180))  # 96×80
    rgba = np.dstack([np.asarray(crop), np.tile(np.arange(96, dtype=np.uint8) * 2, (80, 1))])
    return {
        "rgb-q20.vae": (crop, 20.0),
        "rgb-q90.vae": (crop, 90.0),
        "gray-odd-q50.vae": (crop.convert("L").crop((0, 0, 37, 53)), 50.0),
        "rgba-q60.vae": (rgba, 60.0),
        "one-pixel-q75.vae": (crop.crop((0, 0, 1, 1)), 75.0),
    }


def pixel_md5(a: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(a).tobytes()).hexdigest()


def _folder(model_id: str):
    return GOLDEN / model_id.replace("@", "-")


@pytest.fixture(scope="module")
def det_shipped():
    from vaecodec import Codec

    return Codec(deterministic=True)


def test_default_model_has_golden_vectors(det_shipped):
    if os.environ.get("VAECODEC_REGENERATE") == "1":
        folder = _folder(det_shipped.model_id)
        folder.mkdir(exist_ok=True)
        expected = {}
        for name, (img, q) in cases().items():
            data = det_shipped.encode(img, quality=q)
            (folder / name).write_bytes(data)
            out = det_shipped.decode(data)
            expected[name] = {"md5": pixel_md5(out), "shape": list(out.shape), "model_id": det_shipped.model_id}
        (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    assert (_folder(det_shipped.model_id) / "expected.json").is_file(), "the default model has no golden vectors"


@pytest.mark.parametrize("folder", MODELS)
def test_golden_vectors_decode_to_frozen_pixels(folder):
    from vaecodec import Codec, decode, read_header

    expected = json.loads((GOLDEN / folder / "expected.json").read_text())
    assert set(expected) == set(cases())
    (model_id,) = {facts["model_id"] for facts in expected.values()}
    det = Codec(model_id, deterministic=True)
    for name, facts in expected.items():
        data = (GOLDEN / folder / name).read_bytes()
        assert read_header(data).model_id == model_id
        out = det.decode(data)
        assert list(out.shape) == facts["shape"], name
        assert pixel_md5(out) == facts["md5"], name
        # the one-call API picks the model from the header; default mode is within ±1 of exact
        assert np.abs(decode(data).astype(int) - out).max() <= 1, name
