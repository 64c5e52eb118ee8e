"""The residual synthesis: grown from a checkerboard model with its function kept, tiled exactly, trained alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import natural_like, tiny_checkerboard
from vaecodec import cli
from vaecodec import codec as codec_mod
from vaecodec.codec import Codec
from vaecodec.model import ResidualSynthesisModel, grow_residual_synthesis
from vaecodec.training.synthesis import BASE_LR_SCALE


def tiny_residual(seed: int = 2) -> ResidualSynthesisModel:
    """A tiny checkerboard model grown into the residual synthesis, its blocks set to random (non-identity) weights."""
    parent = tiny_checkerboard(seed)
    model = ResidualSynthesisModel(N=16, M=24)
    missing, unexpected = model.load_state_dict(grow_residual_synthesis(parent.state_dict()), strict=False)
    assert not unexpected and all(".conv" in k for k in missing)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.g_s.named_parameters():
            if ".conv" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.update(force=True)
    return model.eval()


def test_grown_model_decodes_and_rates_as_its_parent():
    parent = tiny_checkerboard(3)
    model = ResidualSynthesisModel(N=16, M=24)
    model.load_state_dict(grow_residual_synthesis(parent.state_dict()), strict=False)
    model.update(force=True)
    model.eval()
    x = torch.from_numpy(natural_like(64, 128, seed=4)).permute(2, 0, 1)[None].float() / 255
    level = torch.tensor([3.5])
    torch.manual_seed(0)
    a = parent(x, level)
    torch.manual_seed(0)
    b = model(x, level)
    assert torch.equal(a["x_hat"], b["x_hat"])
    for k in ("y", "z"):
        assert torch.equal(a["likelihoods"][k], b["likelihoods"][k])
    img = natural_like(40, 72, seed=5)
    pc, mc = (Codec.from_model(m, model_id="p@0", tag=b"p") for m in (parent, model))
    data = pc.encode(img, quality=60)
    assert mc.encode(img, quality=60) == data  # same latents, same file
    assert np.array_equal(mc.decode(data), pc.decode(data))


def _reach(model) -> tuple[int, int]:
    """Latents before and after a 16×16 output block that its pixels depend on (by the gradient)."""
    y = torch.full((1, model.M, 21, 21), 0.3, dtype=torch.float64, requires_grad=True)
    g_s = model.g_s.double()
    g_s(y)[..., 160:176, 160:176].sum().backward()
    model.g_s.float()
    rows = (y.grad.abs().sum((0, 1, 3)) > 0).nonzero().flatten()
    return 10 - int(rows.min()), int(rows.max()) - 10


def test_tile_margin_covers_the_synthesis_reach():
    model = tiny_residual()
    before, after = _reach(model)
    assert (before, after) == (3, 4)
    assert model.tile_margin == max(before, after)
    assert max(_reach(tiny_checkerboard())) <= tiny_checkerboard().tile_margin


def test_tiles_decode_as_the_whole_image_and_a_narrower_margin_would_not(monkeypatch):
    model = tiny_residual()
    det = Codec.from_model(model, model_id="r@0", tag=b"r", deterministic=True)
    img = natural_like(200, 328, seed=11)
    data = det.encode(img, quality=40)
    whole = det.decode(data)
    monkeypatch.setattr(codec_mod, "TILE_LATENTS", 3)
    assert np.array_equal(det.decode(data), whole)
    monkeypatch.setattr(ResidualSynthesisModel, "tile_margin", 2)
    assert not np.array_equal(det.decode(data), whole)


def test_synthesis_training_trains_the_blocks_keeps_the_rest_and_exports(tmp_path):
    from vaecodec.training.export import export, model_from_checkpoint

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(natural_like(192, 208, seed=20 + i)).save(data / f"{i}.png")
    parent = tiny_checkerboard(4)
    w = tmp_path / "p.safetensors"
    export(parent, w, model_id="p@1")
    start = {k: v.float() for k, v in model_from_checkpoint(w).state_dict().items()}
    out = tmp_path / "run"
    args = ["train", str(data), "--out", str(out), "--synthesis", "--init", str(w), "--patch-size", "64",
            "--batch-size", "2", "--steps", "5", "--max-minutes", "5", "--val-every", "0", "--val-fraction", "0.25"]
    r = CliRunner().invoke(cli.main, args)
    assert r.exit_code == 0, r.output
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("val" in rec and "gain_db" in rec["val"] for rec in logs)
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["step"] == 5
    # the new blocks (2 × two convolutions, weight and bias) at the full rate, the parent's layers slower
    groups = ck["opt"]["param_groups"]
    assert [(len(g["params"]), g["lr_scale"]) for g in groups][0] == (8, 1.0)
    assert groups[1]["lr_scale"] == BASE_LR_SCALE < 1 and groups[1]["lr"] == pytest.approx(groups[0]["lr"] * BASE_LR_SCALE)
    model = model_from_checkpoint(out / "last.pt")
    assert isinstance(model, ResidualSynthesisModel)
    assert float(model.g_s[2].conv2.weight.detach().abs().sum()) > 0  # the zero-initialised layer learned
    state = model.state_dict()
    grown = grow_residual_synthesis(start)
    for k, v in grown.items():
        if not k.startswith("g_s."):
            assert torch.equal(state[k].float(), v), k  # everything but the synthesis is the parent's
    i = args.index("--steps") + 1
    r = CliRunner().invoke(cli.main, [*args[:i], "7", *args[i + 1:]])  # resumes
    assert r.exit_code == 0, r.output
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 7
    r = CliRunner().invoke(cli.main, ["export", str(out / "last.pt"), "-o", str(tmp_path / "r.safetensors"),
                                      "--model-id", "r@1"])
    assert r.exit_code == 0, r.output
    codec = Codec(weights=str(tmp_path / "r.safetensors"))
    assert codec.spec.arch == "checkerboard-mean-scale-hyperprior-gain-residual-synthesis"
    img = natural_like(40, 72, seed=3)
    assert codec.decode(codec.encode(img, quality=50)).shape == img.shape


def test_synthesis_training_refuses_a_plain_hyperprior(tmp_path, tiny_model):
    from vaecodec.training.export import export

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(natural_like(64, 64, seed=i)).save(data / f"{i}.png")
    w = tmp_path / "h.safetensors"
    export(tiny_model, w, model_id="h@1")
    r = CliRunner().invoke(cli.main, ["train", str(data), "--out", str(tmp_path / "o"), "--synthesis", "--init",
                                      str(w), "--max-minutes", "1", "--val-fraction", "0.25"])
    assert r.exit_code == 1 and "checkerboard" in r.output


def test_synthesis_training_says_when_the_photos_are_smaller_than_a_crop(tmp_path):
    from vaecodec.training.export import export

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(natural_like(96, 128, seed=i)).save(data / f"{i}.png")
    w = tmp_path / "p.safetensors"
    export(tiny_checkerboard(4), w, model_id="p@1")
    r = CliRunner().invoke(cli.main, ["train", str(data), "--out", str(tmp_path / "o"), "--synthesis", "--init", str(w),
                                      "--patch-size", "64", "--max-minutes", "1", "--val-fraction", "0.25"])
    # 64 pixels plus a margin of 4 latents (64 pixels) on each side: 192 > 96
    assert r.exit_code == 1 and "no training photo is 192 pixels on its shorter side" in r.output


@pytest.mark.parametrize("flags", [["--context", "--synthesis"], ["--synthesis"]])
def test_synthesis_flag_usage_errors(tmp_path, flags):
    r = CliRunner().invoke(cli.main, ["train", str(tmp_path), "--out", str(tmp_path / "o"), *flags])
    assert r.exit_code == 2
