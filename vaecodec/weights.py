"""The shipped model's identity and its weights: safetensors only, sha256-checked at load.

``weights/manifest.json`` (package data, written by :func:`vaecodec.training.export.export`) lists each
model id with its file, sha256 and shape. Reading the manifest needs neither torch nor numpy,
so ``vaecodec info`` stays instant; loading the tensors does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UnknownModelError, WeightsError

if TYPE_CHECKING:
    import torch

WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST = WEIGHTS_DIR / "manifest.json"
WEIGHTS_FORMAT = "vaecodec-weights-1"


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the manifest."""

    model_id: str
    filename: str
    sha256: str
    N: int
    M: int
    levels: int
    arch: str = "mean-scale-hyperprior-gain"
    #: "training" for a snapshot of a run that is still going, "release" for weights whose run
    #: is finished. Informational only: the tests assert the quality bar (beating JPEG)
    #: whatever the status is.
    status: str = "release"

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def tag(self) -> bytes:
        """The 4-byte weights tag stored in every .vae file made with these weights."""
        return bytes.fromhex(self.sha256[:8])


@cache
def _manifest() -> dict[str, object]:
    try:
        return json.loads(MANIFEST.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {"default": None, "models": {}}


def available_models() -> tuple[ModelSpec, ...]:
    m = _manifest()["models"]
    return tuple(ModelSpec(model_id=k, **v) for k, v in m.items())  # type: ignore[union-attr]


def default_model_id() -> str:
    d = _manifest().get("default")
    if not d:
        msg = f"no shipped model: {MANIFEST} is missing or names no default"
        raise WeightsError(msg)
    return str(d)


def get_spec(model_id: str | None = None) -> ModelSpec:
    model_id = model_id or default_model_id()
    for s in available_models():
        if s.model_id == model_id:
            return s
    known = ", ".join(s.model_id for s in available_models()) or "none"
    msg = f"unknown model {model_id!r} (this vaecodec has: {known})"
    raise UnknownModelError(msg)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file (verifying its sha256 when given); floats come back as float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        msg = f"{path}: weights file not found"
        raise WeightsError(msg)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            msg = f"{path}: sha256 is {actual}, expected {sha256}: the weights file is corrupt or replaced"
            raise WeightsError(msg)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        msg = f"{path}: not a readable safetensors file ({e})"
        raise WeightsError(msg) from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def shipped_weights_path(model_id: str | None = None) -> Path:
    return get_spec(model_id).path


def spec_from_file(path: Path) -> ModelSpec:
    """A spec for a weights file outside the manifest (fine-tuned models), from its metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        msg = f"{path}: not a readable safetensors file ({e})"
        raise WeightsError(msg) from None
    if meta.get("format") != WEIGHTS_FORMAT:
        msg = f"{path}: not a vaecodec weights file (metadata format {meta.get('format')!r})"
        raise WeightsError(msg)
    return ModelSpec(
        model_id=meta["model_id"], filename=str(path.resolve()), sha256=sha256_file(path),
        N=int(meta["N"]), M=int(meta["M"]), levels=int(meta["levels"]),
        arch=meta.get("arch", "mean-scale-hyperprior-gain"),
    )
