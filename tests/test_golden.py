"""Golden test vectors: committed .vae files must decode to frozen pixel hashes on any machine.

The files were encoded with the shipped weights; they are decoded with ``deterministic=True``
(exact entropy parameters, float64 synthesis), so the hashes hold across CPUs, thread counts
and devices. Regenerate them only on purpose, together with a format or model version bump:

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
EXPECTED = GOLDEN / "expected.json"


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


@pytest.fixture(scope="module")
def det_shipped():
    from vaecodec import Codec

    return Codec(deterministic=True)


def test_golden_vectors_decode_to_frozen_pixels(det_shipped):
    if os.environ.get("VAECODEC_REGENERATE") == "1":
        expected = {}
        for name, (img, q) in cases().items():
            data = det_shipped.encode(img, quality=q)
            (GOLDEN / name).write_bytes(data)
            out = det_shipped.decode(data)
            expected[name] = {"md5": pixel_md5(out), "shape": list(out.shape), "model_id": det_shipped.model_id}
        EXPECTED.write_text(json.dumps(expected, indent=2) + "\n")
    expected = json.loads(EXPECTED.read_text())
    assert set(expected) == set(cases())
    for name, facts in expected.items():
        out = det_shipped.decode((GOLDEN / name).read_bytes())
        assert list(out.shape) == facts["shape"], name
        assert pixel_md5(out) == facts["md5"], name


def test_golden_vectors_decode_close_in_default_mode(shipped_codec, det_shipped):
    for name in json.loads(EXPECTED.read_text()):
        data = (GOLDEN / name).read_bytes()
        diff = np.abs(shipped_codec.decode(data).astype(int) - det_shipped.decode(data))
        assert diff.max() <= 1, name
