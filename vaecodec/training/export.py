"""Export a trained model: build the entropy tables, write safetensors (+ sha256) and the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import TrainingError
from ..model import LAMBDAS, HyperpriorModel, arch_of, build_model, ladder
from ..weights import MANIFEST, WEIGHTS_DIR, WEIGHTS_FORMAT, sha256_file

_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def model_from_checkpoint(path: str | Path, *, averaged: bool = True) -> HyperpriorModel:
    """The model in a training checkpoint (``last.pt``/``best.pt``) or a weights file.

    A checkpoint holds the live weights and, when training kept one, their exponential
    moving average; ``averaged`` picks the average (what validation scores) if present.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from ..weights import load_state_dict, spec_from_file

        spec = spec_from_file(path)
        model = build_model(spec.arch, spec.N, spec.M, spec.levels)
        model.load_state_dict(load_state_dict(path))
        return model
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as e:
        msg = f"{path}: not a readable checkpoint ({e})"
        raise TrainingError(msg) from None
    if "context" in ck:  # a checkerboard context run: its base weights plus the context
        from .context import model_from_context_checkpoint

        return model_from_context_checkpoint(path)
    if ck.get("synthesis"):  # a synthesis run: its parent's weights plus the trained synthesis
        from .synthesis import model_from_synthesis_checkpoint

        return model_from_synthesis_checkpoint(path)
    cfg = ck.get("config", {})
    state = ck["ema"] if averaged and "ema" in ck else ck["model"]
    from .loop import arch_of_state

    model = build_model(arch_of_state(state), cfg.get("N", 128), cfg.get("M", 192), state["gain"].shape[0])
    model.load_state_dict(state)
    return model


def export(
    model: HyperpriorModel, out: str | Path, *, model_id: str, half: bool = True, metadata: dict[str, str] | None = None,
) -> str:
    """Write ``model`` to ``out`` (safetensors) and return its sha256.

    With ``half`` the learned parameters are stored as float16; the entropy tables are then
    built *from the rounded parameters*, so the stored tables match what a decoder computes.
    """
    model = model.cpu().eval()
    with torch.no_grad():
        if half:
            for p in model.parameters():
                p.copy_(p.half().float())
        model.update(force=True, update_quantiles=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().contiguous()
        if half and v.is_floating_point() and not k.endswith(_TABLES):
            v = v.half()
        state[k] = v
    meta = {"format": WEIGHTS_FORMAT, "model_id": model_id, "N": str(model.N), "M": str(model.M),
            "levels": str(model.levels), "arch": arch_of(model), **(metadata or {})}
    if model.levels >= len(LAMBDAS):  # the ladder it was trained on (training grows 8 levels to 9)
        meta.setdefault("lambdas", json.dumps(list(ladder(model.levels))))
    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, out)
    return sha256_file(out)


def ship(
    model: HyperpriorModel, model_id: str, metadata: dict[str, str] | None = None, *, status: str = "release"
) -> Path:
    """Export into the package's weights folder and make it the manifest's default."""
    name = model_id.replace("@", "-") + ".safetensors"
    path = WEIGHTS_DIR / name
    WEIGHTS_DIR.mkdir(exist_ok=True)
    digest = export(model, path, model_id=model_id, metadata=metadata)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": {}}
    manifest["default"] = model_id
    manifest["models"][model_id] = {
        "filename": name, "sha256": digest, "N": model.N, "M": model.M, "levels": model.levels,
        "arch": arch_of(model), "status": status,
    }
    tmp = MANIFEST.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, MANIFEST)
    return path
