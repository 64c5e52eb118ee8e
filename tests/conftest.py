"""Shared fixtures: a tiny in-process codec, synthetic images, and paths to optional real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KODAK = SHARED / "datasets" / "kodak"
ASSETS = REPO / "assets"


def natural_like(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth, photo-like test image (gradients plus blobs plus a little noise), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, channels))
    for c in range(channels):
        img[..., c] = 128 + 60 * np.sin(xx / (7 + 3 * c) + c) * np.cos(yy / (11 + c))
        for _ in range(3):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 20)
            img[..., c] += rng.uniform(-60, 60) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img += rng.normal(0, 3, img.shape)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


@pytest.fixture(scope="session")
def tiny_model():
    """A small, seeded, random-weight model with its entropy tables built."""
    import torch

    from vaecodec.model import HyperpriorModel

    torch.manual_seed(0)
    model = HyperpriorModel(N=16, M=24)
    model.update(force=True)
    return model.eval()


def tiny_checkerboard(seed: int = 1):
    """A small, seeded, random-weight checkerboard model whose context is not zero (tables built)."""
    import torch

    from vaecodec.model import CheckerboardModel

    torch.manual_seed(seed)
    model = CheckerboardModel(N=16, M=24)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in [model.context, *model.entropy_parameters]:
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * 0.05)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.05)
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_ctx_model():
    return tiny_checkerboard()


@pytest.fixture(scope="session")
def tiny_codec(tiny_model):
    from vaecodec.codec import Codec

    return Codec.from_model(tiny_model, model_id="tiny@0", tag=b"tiny")


@pytest.fixture(scope="session")
def shipped_codec():
    from vaecodec import Codec

    return Codec()


@pytest.fixture
def kodak_dir() -> Path:
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found at {KODAK} (the ../shared folder is absent)")
    return KODAK
