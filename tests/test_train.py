"""Training: runs, checkpoints, resumes exactly, exports, and runs data-parallel with torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import REPO, natural_like
from vaecodec import cli
from vaecodec.errors import TrainingError
from vaecodec.model import HyperpriorModel
from vaecodec.training.loop import TrainConfig, split_train_val, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i in range(6):
        Image.fromarray(natural_like(96 + 16 * i, 128, seed=i)).save(d / f"p{i}.png")
    return d


def config(data_dir, out, **kw) -> TrainConfig:
    base = dict(data=str(data_dir), out=str(out), steps=4, batch_size=2, patch_size=64, N=8, M=12,
                lr_warmup=1, log_every=1, val_fraction=0.34, val_every_s=0.0, checkpoint_every_s=1e9, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"]


def exported(data_dir, tmp_path, **kw) -> str:
    """A .safetensors file of a one-step run (model id "a@1"), for --init."""
    from vaecodec.training.export import export, model_from_checkpoint

    train(config(data_dir, tmp_path / "a", steps=1, val_fraction=0, **kw), progress=False)
    w = tmp_path / "a.safetensors"
    export(model_from_checkpoint(tmp_path / "a" / "last.pt"), w, model_id="a@1")
    return str(w)


def test_training_logs_validates_and_checkpoints(data_dir, tmp_path):
    result = train(config(data_dir, tmp_path), progress=False)
    assert {"0", "3", "5", "8", "score"} <= result.keys()  # both ends of the 9-rung ladder and two between
    assert result["objective"] == result["score"]  # no level balance: the plain mean picks the best
    lines = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["bpp"] > 0 and r["psnr"] > 0 for r in steps)
    assert any("val" in r for r in lines)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 4 and (tmp_path / "best.pt").exists()
    # the weight average is validated (and the live weights beside it), kept and exported
    val = next(r for r in lines if "val" in r)
    assert "val_raw" in val and len(val["lambdas"]) == 9
    assert ck["ema"].keys() == ck["model"].keys()
    assert any(not torch.equal(ck["ema"][k], ck["model"][k]) for k in ck["model"])


def test_weight_average_follows_the_live_weights(data_dir, tmp_path):
    from vaecodec.training.export import model_from_checkpoint

    train(config(data_dir, tmp_path, steps=6, val_fraction=0, ema_decay=0.5), progress=False)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    ema, live = ck["ema"]["g_a.0.weight"], ck["model"]["g_a.0.weight"]
    start = HyperpriorModel(8, 12).state_dict()["g_a.0.weight"]  # not what it started from
    assert not torch.equal(ema, live)
    assert (ema - live).norm() < (start - live).norm()
    assert torch.equal(model_from_checkpoint(tmp_path / "last.pt").state_dict()["g_a.0.weight"], ema)
    assert torch.equal(model_from_checkpoint(tmp_path / "last.pt", averaged=False).state_dict()["g_a.0.weight"], live)


def test_init_from_a_checkpoint_starts_from_its_weight_average(data_dir, tmp_path):
    """`--init run/best.pt` fine-tunes what that run validated and would export: the average."""
    from vaecodec.training.loop import load_init_state

    train(config(data_dir, tmp_path / "a", steps=3, val_fraction=0, ema_decay=0.5), progress=False)
    ck = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=False)
    state = load_init_state(str(tmp_path / "a" / "last.pt"))
    assert not torch.equal(ck["ema"]["g_a.0.weight"], ck["model"]["g_a.0.weight"])
    assert all(torch.equal(state[k], ck["ema"][k]) for k in ck["ema"])
    del ck["ema"]  # a checkpoint without an average gives its live weights
    torch.save(ck, tmp_path / "live.pt")
    assert torch.equal(load_init_state(str(tmp_path / "live.pt"))["g_a.0.weight"], ck["model"]["g_a.0.weight"])


def test_weights_with_fewer_levels_grow_a_lower_rung(data_dir, tmp_path):
    """A checkpoint from the 8-level ladder resumes on the 9-level one (model, moments, average)."""
    from vaecodec.training.surgery import grow_levels

    old = HyperpriorModel(8, 12, levels=8).state_dict()
    grown = grow_levels(old, 9)
    assert grown["gain"].shape == (9, 12)
    assert torch.equal(grown["gain"][1:], old["gain"])
    assert torch.allclose(grown["gain"][0], 2 * old["gain"][0] - old["gain"][1])
    assert torch.equal(grown["g_a.0.weight"], old["g_a.0.weight"])

    out = tmp_path / "run"
    train(config(data_dir, out, steps=2, val_fraction=0), progress=False)
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        ck[key] = {k: (v[1:] if k in ("gain", "inv_gain", "hyper_gain", "inv_hyper_gain") else v)
                   for k, v in ck[key].items()}
    for st in ck["optimizer"]["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            if st[k].dim() == 2 and st[k].shape[0] == 9:
                st[k] = st[k][1:]
    torch.save(ck, out / "last.pt")
    train(config(data_dir, out, steps=4, val_fraction=0), progress=False)
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 4 and ck["model"]["gain"].shape[0] == 9 and ck["ema"]["gain"].shape[0] == 9


def test_levels_above_the_ladder_extrapolate_the_gains_and_train(data_dir, tmp_path):
    """--levels 10 adds a rung above λ=0.18: the old levels code as before, the new one finer."""
    from vaecodec.model import LAMBDAS, ladder, lambda_at
    from vaecodec.training.surgery import grow_levels

    assert ladder(8) == LAMBDAS[1:] and ladder(9) == LAMBDAS
    assert ladder(10)[:9] == LAMBDAS and ladder(10)[9] == pytest.approx(0.18 * 0.18 / 0.0932, rel=1e-3)
    assert float(lambda_at(torch.tensor([9.0]), 10)) == pytest.approx(ladder(10)[9], rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        ladder(1)

    torch.manual_seed(0)
    old = HyperpriorModel(8, 12).eval()
    tall = HyperpriorModel(8, 12, levels=10).eval()
    tall.load_state_dict(grow_levels(old.state_dict(), 10))
    assert torch.equal(tall.gain[:9], old.gain)
    assert torch.allclose(tall.gain[9], 2 * old.gain[8] - old.gain[7])
    x = torch.rand(1, 3, 64, 64)
    for lv in (0.0, 4.5, 8.0):
        level = torch.full((1,), lv)
        assert torch.equal(old(x, level)["x_hat"], tall(x, level)["x_hat"])
    # the gain ratio of the top two rungs continues: level 9 quantizes y more finely than level 8
    assert torch.allclose(tall.gain[9] - tall.gain[8], old.gain[8] - old.gain[7], atol=1e-6)

    w = exported(data_dir, tmp_path)
    out = tmp_path / "tall"
    train(config(data_dir, out, steps=2, init=w, levels=10), progress=False)
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck["model"]["gain"].shape[0] == 10 and ck["lambdas"][-1] == pytest.approx(ladder(10)[9], rel=1e-4)
    assert "9" in json.loads((out / "log.jsonl").read_text().splitlines()[-1])["val"]  # validated at the new top
    train(config(data_dir, out, steps=3), progress=False)  # a resumed run keeps its ladder
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"]["gain"].shape[0] == 10
    with pytest.raises(TrainingError, match="cannot shrink"):
        train(config(data_dir, out, steps=4, levels=9), progress=False)


def test_resume_continues_exactly(data_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(config(data_dir, straight, steps=4, val_fraction=0), progress=False)
    train(config(data_dir, split, steps=2, val_fraction=0), progress=False)
    train(config(data_dir, split, steps=4, val_fraction=0), progress=False)
    a, b = weights(straight), weights(split)
    assert torch.load(split / "last.pt", weights_only=False)["step"] == 4
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea = torch.load(straight / "last.pt", weights_only=False)["ema"]
    eb = torch.load(split / "last.pt", weights_only=False)["ema"]
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k


def test_first_record_after_resume_averages_only_the_steps_it_saw(data_dir, tmp_path):
    """Resumed between two log records, the first record averages the steps since the resume, not a
    partial sum over log_every (which halved loss, bpp and PSNR in a real log)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(config(data_dir, straight, steps=4, val_fraction=0), progress=False)
    train(config(data_dir, split, steps=3, val_fraction=0, log_every=2), progress=False)
    train(config(data_dir, split, steps=4, val_fraction=0, log_every=2), progress=False)

    def records(out):
        lines = (out / "log.jsonl").read_text().splitlines()
        return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}

    one_step, resumed = records(straight)[4], records(split)[4]  # both cover step 4 alone
    for k in ("loss", "bpp", "psnr"):
        assert resumed[k] == pytest.approx(one_step[k], rel=1e-6), k


def test_holdout_split_is_deterministic_and_disjoint(tmp_path):
    files = [tmp_path / f"{i:03}.png" for i in range(100)]
    tr, va = split_train_val(files, 0.05)
    assert len(va) == 5 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert split_train_val(files, 0.05) == (tr, va)


def test_cli_train_export_and_encode_with_the_weights(data_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli.main, ["train", str(data_dir), "--out", str(tmp_path / "run"), "--steps", "2",
                                 "--batch-size", "2", "--patch-size", "64", "--channels", "8", "12",
                                 "--val-fraction", "0"])
    assert r.exit_code == 0, r.stderr
    w = tmp_path / "mine.safetensors"
    r = runner.invoke(cli.main, ["export", str(tmp_path / "run" / "last.pt"), "-o", str(w), "--model-id", "mine@1"])
    assert r.exit_code == 0 and "sha256" in r.stdout
    img = tmp_path / "x.png"
    Image.fromarray(natural_like(30, 40)).save(img)
    r = runner.invoke(cli.main, ["encode", str(img), "--weights", str(w), "-o", str(tmp_path / "x.vae")])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli.main, ["decode", str(tmp_path / "x.vae"), "--weights", str(w), "-o", str(tmp_path / "y.png")])
    assert r.exit_code == 0, r.stderr
    assert Image.open(tmp_path / "y.png").size == (40, 30)
    r = runner.invoke(cli.main, ["decode", str(tmp_path / "x.vae"), "-o", str(tmp_path / "z.png")])
    assert r.exit_code == 1 and "mine@1" in r.stderr  # the shipped model does not know these weights


def test_fine_tune_from_weights_file(data_dir, tmp_path):
    w = exported(data_dir, tmp_path)
    train(config(data_dir, tmp_path / "b", steps=1, val_fraction=0, init=w), progress=False)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["step"] == 1
    # continuing a run on a new machine: the step count goes on from the given start
    train(config(data_dir, tmp_path / "c", steps=102, start_step=100, val_fraction=0, init=w), progress=False)
    assert torch.load(tmp_path / "c" / "last.pt", weights_only=False)["step"] == 102


def test_channels_default_to_those_of_the_init_weights_or_the_resumed_run(data_dir, tmp_path):
    """Fine-tuning needs no --channels: a model of other widths (the shipped one may be wider than the
    128/192 default) is continued at its own; a resumed run keeps the widths it started with."""
    w = exported(data_dir, tmp_path, N=8, M=16)
    train(config(data_dir, tmp_path / "b", steps=1, val_fraction=0, N=None, M=None, init=w), progress=False)
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert (ck["config"]["N"], ck["config"]["M"]) == (8, 16) and ck["model"]["g_a.6.weight"].shape[0] == 16
    train(config(data_dir, tmp_path / "b", steps=2, val_fraction=0, N=None, M=None), progress=False)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["step"] == 2
    from vaecodec.training.loop import _channels

    assert _channels(TrainConfig(data="d", out="o"), None, None) == (128, 192)  # from scratch


def test_fine_tune_interrupted_in_its_warm_up_resumes_the_warm_up(data_dir, tmp_path):
    """A run started from --init warms its fresh optimizer up from the start step; stopped and resumed
    inside the warm-up it goes on with the same learning rates and weights (it used to jump to the peak)."""
    kw = dict(val_fraction=0, init=exported(data_dir, tmp_path), start_step=100, lr_warmup=4)
    train(config(data_dir, tmp_path / "straight", steps=104, **kw), progress=False)
    train(config(data_dir, tmp_path / "split", steps=102, **kw), progress=False)
    train(config(data_dir, tmp_path / "split", steps=104, **kw), progress=False)

    def lrs(out):
        return [r["lr"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]

    assert lrs(tmp_path / "split") == lrs(tmp_path / "straight")
    assert lrs(tmp_path / "straight")[2] < 5e-4  # still warming up at step 103
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea, eb = (torch.load(tmp_path / r / "last.pt", weights_only=False)["ema"] for r in ("straight", "split"))
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k


def test_fine_tune_keeps_averaging_from_the_init_weights_through_the_warm_up(data_dir, tmp_path):
    """From --init the moving average starts at the trained weights and keeps averaging while the fresh
    optimizer warms up; from scratch it follows the live weights until the warm-up ends. (Following them
    from --init threw the trained average away: a measured fine-tune lost 0.024 of validation objective
    in its warm-up.)"""
    old = HyperpriorModel(8, 12)
    init = tmp_path / "init.pt"
    torch.save({"model": old.state_dict()}, init)
    params = [k for k, _ in old.named_parameters()]
    kw = dict(steps=2, val_fraction=0, lr_warmup=10, ema_decay=0.5)
    train(config(data_dir, tmp_path / "scratch", **kw), progress=False)
    ck = torch.load(tmp_path / "scratch" / "last.pt", weights_only=False)
    assert all(torch.equal(ck["ema"][k], ck["model"][k]) for k in params)
    train(config(data_dir, tmp_path / "ft", init=str(init), **kw), progress=False)
    ck = torch.load(tmp_path / "ft" / "last.pt", weights_only=False)
    train(config(data_dir, tmp_path / "ft1", init=str(init), **{**kw, "steps": 1}), progress=False)
    k = "g_a.0.weight"
    w1 = torch.load(tmp_path / "ft1" / "last.pt", weights_only=False)["model"][k]
    start, ema, w2 = old.state_dict()[k], ck["ema"][k], ck["model"][k]
    assert not torch.equal(ema, w2)
    # two steps at decay 0.5: a quarter of the average is still the init weights
    assert torch.allclose(ema, 0.25 * start + 0.25 * w1 + 0.5 * w2, atol=1e-6)


def test_auto_precision_is_float32_on_a_cpu_without_fast_bf16(data_dir, tmp_path, monkeypatch, caplog):
    import vaecodec.training.loop as vt

    monkeypatch.setattr(vt, "fast_bf16", lambda device: False)
    with caplog.at_level("INFO", logger=vt.log.name):
        train(config(data_dir, tmp_path, steps=1, val_fraction=0), progress=False)
    assert "precision: fp32" in caplog.text
    monkeypatch.setattr(vt, "fast_bf16", lambda device: True)
    with caplog.at_level("INFO", logger=vt.log.name):
        train(config(data_dir, tmp_path / "b", steps=1, val_fraction=0), progress=False)
    assert "precision: bf16" in caplog.text


def test_fast_bf16_asks_onednn_and_falls_back_on_the_cpu_capability(monkeypatch):
    from vaecodec.model import fast_bf16

    assert fast_bf16("cuda") and not fast_bf16("meta")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert not fast_bf16("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert fast_bf16("cpu")

    def gone():
        raise AttributeError("_is_mkldnn_bf16_supported")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", gone, raising=False)
    for cap, fast in (("AVX2", False), ("AVX512", True), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda cap=cap: cap)
        assert fast_bf16("cpu") is fast


def test_missing_data_folder_is_a_training_error(tmp_path):
    with pytest.raises(TrainingError, match="not found"):
        train(config(tmp_path / "nope", tmp_path / "out"), progress=False)
    r = CliRunner().invoke(cli.main, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.stderr.startswith("error: ")


def test_level_weights_steer_the_sampled_rates(tmp_path):
    from vaecodec.errors import TrainingError
    from vaecodec.training.loop import _sample_levels

    gen = torch.Generator().manual_seed(0)
    top = _sample_levels(TrainConfig("d", "o", level_weights=(0,) * 8 + (1,)), 2000, gen, 9)
    assert top.min() >= 7.5 and top.max() == 8
    low = _sample_levels(TrainConfig("d", "o", level_weights=(3, 1) + (0,) * 7), 4000, gen, 9)
    assert low.max() <= 1.5
    assert 0.70 < float((low < 0.5).float().mean()) < 0.80  # 3 of 4 draws come from level 0
    for bad in ("1,2", "1,1,1,1,1,1,1,1,-1", "0,0,0,0,0,0,0,0,0"):
        r = CliRunner().invoke(cli.main, ["train", str(tmp_path), "--out", str(tmp_path / "o"), "--level-weights", bad])
        assert r.exit_code == 1 and "level weights" in r.stderr, (bad, r.output)
    with pytest.raises(TrainingError, match="9 non-negative"):
        train(config(tmp_path, tmp_path / "o", level_weights=(1.0,) * 3), progress=False)
    r = CliRunner().invoke(cli.main, ["train", str(tmp_path), "--out", str(tmp_path / "o"), "--level-weights", "a,b"])
    assert r.exit_code == 2 and "comma-separated numbers" in r.output


def test_level_balance_weights_each_crop_by_its_rate(data_dir, tmp_path):
    from vaecodec.errors import TrainingError
    from vaecodec.model import LAMBDAS
    from vaecodec.training.loop import loss_weights, rd_loss

    lam = torch.tensor(LAMBDAS)
    assert torch.equal(loss_weights(lam, 0.0), torch.ones(9))
    w = loss_weights(lam, 0.5)
    assert torch.all(w[:-1] > w[1:])  # lower rates weigh more
    assert w[0] * w[-1] == pytest.approx(1.0)  # the ends are reciprocal about the ladder's middle
    assert float(w[0] / w[-1]) == pytest.approx((LAMBDAS[-1] / LAMBDAS[0]) ** 0.5)
    # the weights enter the batch mean crop by crop
    x = torch.full((2, 3, 4, 4), 0.5)
    out = {"x_hat": x + 0.1, "likelihoods": {"y": torch.full((2, 1, 2, 2), 0.5)}}
    lam2 = torch.tensor([0.001, 0.1])
    per_crop = 4 / 16 + lam2 * 255**2 * 0.01
    weighted = rd_loss(out, x, lam2, weight=torch.tensor([3.0, 0.5]))["loss"]
    assert float(weighted) == pytest.approx(float((per_crop * torch.tensor([3.0, 0.5])).mean()), rel=1e-5)
    assert float(rd_loss(out, x, lam2)["loss"]) == pytest.approx(float(per_crop.mean()), rel=1e-5)
    # a run with it trains, and a bad value is refused
    val = train(config(data_dir, tmp_path / "run", steps=2, level_balance=0.5), progress=False)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["config"]["level_balance"] == 0.5
    # validation keeps the plain mean loss as its score and picks the best checkpoint by the
    # objective the run trains (the weighted mean)
    levels = [k for k, v in val.items() if isinstance(v, dict)]
    w = loss_weights(torch.tensor([LAMBDAS[int(float(k))] for k in levels]), 0.5)
    assert val["score"] == pytest.approx(sum(val[k]["loss"] for k in levels) / len(levels))
    assert val["objective"] == pytest.approx(sum(float(wi) * val[k]["loss"] for wi, k in zip(w, levels)) / len(levels))
    with pytest.raises(TrainingError, match="level balance"):
        train(config(data_dir, tmp_path / "o", level_balance=-1.0), progress=False)
    r = CliRunner().invoke(cli.main, ["train", str(data_dir), "--out", str(tmp_path / "o"), "--level-balance", "2"])
    assert r.exit_code == 1 and "level balance" in r.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_data_parallel_with_two_processes(data_dir, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    # gloo on the loopback interface: without it, gloo uses the address the host name resolves to
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}
    # --standalone: a free port and a fresh rendezvous, so that parallel runs on one host do not meet
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "vaecodec", "train", str(data_dir),
           "--out", str(tmp_path), "--steps", "3", "--batch-size", "2", "--patch-size", "64",
           "--channels", "8", "12", "--val-fraction", "0", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    # the ranks' own errors come first; torchrun's summary of them last
    assert r.returncode == 0, r.stderr[:3000] + "\n[...]\n" + r.stderr[-1000:]
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 3 and ck["world"] == 2 and "rng1" in ck


def _agree_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from vaecodec.training.loop import _agree

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        seen = _agree({"val": rank == 0, "checkpoint": rank == 1, "time": False}, 2)
        torch.save(seen, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_clock_and_signal_decisions(tmp_path, monkeypatch):
    """A flag raised on one rank (its clock says validate, a signal arrived) is raised on all."""
    import torch.multiprocessing as mp

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    init = (tmp_path / "rendezvous").as_uri()
    mp.spawn(_agree_worker, args=(init, str(tmp_path / "seen")), nprocs=2)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"seen.{rank}") == {"val": True, "checkpoint": True, "time": False}


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(data_dir, tmp_path):
    """Stopping a run (Ctrl-C, or SIGTERM from a scheduler) saves it; resuming continues from there."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vaecodec", "train", str(data_dir), "--out", str(tmp_path), "--steps", "1000000",
           "--batch-size", "2", "--patch-size", "64", "--channels", "8", "12", "--val-fraction", "0",
           "--checkpoint-every", "1e9", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "no training progress within 2 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)  # only the stop saved one
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert 50 <= max(logged) <= ck["step"] < 1000000


def test_checkpoint_comparison_on_the_held_out_photos(data_dir, tmp_path, capsys):
    from benchmarks import checkpoints

    train(config(data_dir, tmp_path), progress=False)
    out = tmp_path / "ab.json"
    assert checkpoints.main([str(tmp_path / "last.pt"), "--data", str(data_dir), "--val-fraction", "0.34",
                             "--json", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert rec["step"] == 4 and len(rec["bpp"]) == len(rec["psnr"]) == 9
    assert all(b > 0 for b in rec["bpp"]) and math.isfinite(rec["score"])
    _, held = split_train_val(sorted(data_dir.iterdir()), 0.34)
    assert f"{len(held)} held-out photos" in capsys.readouterr().out
    # the live weights are another model than their average
    assert checkpoints.main([str(tmp_path / "last.pt"), "--data", str(data_dir), "--val-fraction", "0.34",
                             "--raw", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["bpp"] != rec["bpp"]
    assert checkpoints.main([str(tmp_path / "nope.pt"), "--data", str(data_dir)]) == 1
    assert "nope.pt: no such file" in capsys.readouterr().err


def _trained_from(old: HyperpriorModel, data_dir, tmp_path, **channels) -> dict:
    """The last checkpoint of a 3-step run started from ``old``'s weights with other ``channels``."""
    init = tmp_path / "narrow.pt"
    torch.save({"model": old.state_dict()}, init)
    out = tmp_path / "run"
    train(config(data_dir, out, steps=3, val_fraction=0, init=str(init), **channels), progress=False)
    return torch.load(out / "last.pt", map_location="cpu", weights_only=False)


def test_widening_y_keeps_the_image_and_opens_the_new_channels(data_dir, tmp_path):
    """--channels N M with --init weights of fewer y channels widens them (Net2Net-style)."""
    from vaecodec.training.surgery import widen_latents

    torch.manual_seed(0)
    old = HyperpriorModel(8, 12).eval()
    wide = HyperpriorModel(8, 20).eval()
    wide.load_state_dict(widen_latents(old.state_dict(), 20, spread=2.0))
    x = torch.rand(2, 3, 64, 64)
    for lv in (0.0, 4.0, 8.0):
        level = torch.full((2,), lv)
        a, b = old(x, level), wide(x, level)
        assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-6)  # the new channels are read by zeros
        assert torch.allclose(a["likelihoods"]["z"], b["likelihoods"]["z"])
        assert torch.allclose(a["likelihoods"]["y"], b["likelihoods"]["y"][:, :12], atol=1e-6)
    with torch.no_grad():
        y_new = wide.g_a(x)[:, 12:] * wide.gains(torch.full((2,), 8.0))[0][:, 12:]
    assert (torch.round(y_new) != 0).any()  # and carry symbols at the top level
    with pytest.raises(ValueError, match="narrow"):
        widen_latents(wide.state_dict(), 12)

    # a run started from the narrower weights trains the wider model: the synthesis learns to
    # read the new channels (weights that read channels stuck at 0 would get no gradient)
    ck = _trained_from(old, data_dir, tmp_path, M=20)
    start = widen_latents(old.state_dict(), 20)
    for name in ("g_a.6.weight", "g_s.0.weight", "h_s.0.weight", "h_s.4.weight"):
        assert ck["model"][name].shape == start[name].shape
    assert not torch.equal(start["g_a.6.weight"][12:], torch.zeros_like(start["g_a.6.weight"][12:]))
    assert torch.equal(start["g_s.0.weight"][12:], torch.zeros_like(start["g_s.0.weight"][12:]))
    assert not torch.equal(ck["model"]["g_a.6.weight"][12:], start["g_a.6.weight"][12:])
    assert not torch.equal(ck["model"]["g_s.0.weight"][12:], start["g_s.0.weight"][12:])
    assert not torch.equal(ck["model"]["h_s.0.weight"][:, 12:], start["h_s.0.weight"][:, 12:])


def test_opening_widened_channels_ramps_their_rate_into_the_loss(data_dir, tmp_path):
    """--open-channels K: the new y channels' bits are left out of the loss, then ramp in over K steps."""
    from vaecodec.training.loop import _y_rate_weight, rd_loss

    x = torch.full((1, 3, 4, 4), 0.5)
    lik = torch.tensor([0.5, 0.25])[None, :, None, None].expand(1, 2, 2, 2)  # 1 and 2 bits a symbol
    out = {"x_hat": x, "likelihoods": {"y": lik, "z": torch.full((1, 1, 1, 1), 0.5)}}
    lam = torch.tensor([0.01])
    full = rd_loss(out, x, lam)
    half = rd_loss(out, x, lam, y_rate_weight=torch.tensor([1.0, 0.5]))
    assert float(full["loss"]) == pytest.approx((4 + 8 + 1) / 16)
    assert float(half["loss"]) == pytest.approx((4 + 4 + 1) / 16)
    assert float(half["bpp"]) == float(full["bpp"])  # the reported rate counts every bit

    cfg = config(data_dir, tmp_path, open_channels=10)
    opening = {"from": 12, "start": 100}
    assert _y_rate_weight(cfg, None, 100, 20) is None
    assert _y_rate_weight(config(data_dir, tmp_path), opening, 100, 20) is None
    assert torch.equal(_y_rate_weight(cfg, opening, 105, 20)[12:], torch.zeros(8))  # first half: left out
    w = _y_rate_weight(cfg, opening, 108, 20)  # then a linear ramp
    assert torch.equal(w[:12], torch.ones(12)) and torch.allclose(w[12:], torch.full((8,), 0.6))
    assert _y_rate_weight(cfg, opening, 110, 20) is None

    # a run that widens y records where the opening started, and keeps it when resumed
    torch.manual_seed(0)
    ck = _trained_from(HyperpriorModel(8, 12), data_dir, tmp_path, M=20, open_channels=50)
    assert ck["opening"] == {"from": 12, "start": 0}
    train(config(data_dir, tmp_path / "run", steps=4, val_fraction=0, M=20, open_channels=50), progress=False)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["opening"] == {"from": 12, "start": 0}
    (tmp_path / "b").mkdir()
    ck = _trained_from(HyperpriorModel(8, 12), data_dir, tmp_path / "b", M=20)
    assert ck["opening"] is None  # not asked for


def test_widening_the_transforms_keeps_the_function_and_lets_the_new_units_learn(data_dir, tmp_path):
    """--channels N M with --init weights of a narrower N widens g_a, g_s, h_a, h_s and z."""
    from vaecodec.training.surgery import widen_transforms

    torch.manual_seed(0)
    old = HyperpriorModel(8, 12)
    eb = old.entropy_bottleneck
    with torch.no_grad():  # a trained-looking prior: channel 3 narrowed 100x, every channel shifted
        m0 = torch.nn.functional.softplus(eb.matrices[0])
        m0[3] *= 100
        eb.matrices[0].copy_(torch.log(torch.expm1(m0)))
        eb.quantiles[3] /= 100
        shift = torch.randn(8, 1, 1) * 2
        eb.biases[0].sub_(m0 * shift)
        eb.quantiles.add_(shift)
    old.eval()
    wide = HyperpriorModel(14, 12).eval()
    wide.load_state_dict(widen_transforms(old.state_dict(), 14))
    x = torch.rand(2, 3, 128, 128)
    for lv in (0.0, 4.0, 8.0):
        level = torch.full((2,), lv)
        with torch.no_grad():
            a, b = old(x, level), wide(x, level)
            z = wide.h_a(wide.g_a(x) * wide.gains(level)[0]) * wide.gains(level)[2]
            z_new = z[:, 8:]
        assert torch.equal(torch.round(z_new), torch.zeros_like(z_new))  # the new z channels quantize to 0
        assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
        assert torch.allclose(a["likelihoods"]["y"], b["likelihoods"]["y"], atol=1e-5)
        assert torch.allclose(a["likelihoods"]["z"], b["likelihoods"]["z"][:, :8], atol=1e-6)
        assert b["likelihoods"]["z"][:, 8:].min() > 0.9  # and cost little: a copy of the narrow prior at 0
    # the widened model still codes to bytes and back, with tables rebuilt by update()
    wide.update(force=True)
    with torch.no_grad():
        z_hat = wide.entropy_bottleneck.decompress(wide.entropy_bottleneck.compress(z), z.shape[-2:])
    assert torch.equal(z_hat[:, 8:], torch.zeros_like(z_new))
    with pytest.raises(ValueError, match="narrow"):
        widen_transforms(wide.state_dict(), 8)

    # a run started from the narrower weights trains the wider model, new units included
    ck = _trained_from(old, data_dir, tmp_path, N=14)
    start = widen_transforms(old.state_dict(), 14)
    assert ck["config"]["N"] == 14 and ck["model"]["g_s.2.weight"].shape == (14, 14, 5, 5)
    # the new units' outgoing weights (zeros at first) and the new columns of g_a's last layer moved
    assert not torch.equal(ck["model"]["g_s.4.weight"][8:], start["g_s.4.weight"][8:])
    assert not torch.equal(ck["model"]["g_a.6.weight"][:, 8:], start["g_a.6.weight"][:, 8:])


def test_split_widening_copies_the_most_read_units_and_keeps_the_function(data_dir, tmp_path):
    """--split-units: new hidden units of g_a and g_s are noisy copies of old ones (Net2Net)."""
    from vaecodec.training import surgery

    torch.manual_seed(0)
    old = HyperpriorModel(8, 12).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        y = old.g_a(x)
        x_hat = old.g_s(y)
    for N in (14, 20):  # 20: more new units than old ones, so some units have two copies
        exact = HyperpriorModel(N, 12).eval()
        exact.load_state_dict(surgery.widen_transforms(old.state_dict(), N, split=0.0))
        noisy = HyperpriorModel(N, 12).eval()
        noisy.load_state_dict(surgery.widen_transforms(old.state_dict(), N, split=surgery.SPLIT_NOISE))
        with torch.no_grad():
            assert torch.allclose(exact.g_a(x), y, atol=1e-5) and torch.allclose(exact.g_s(y), x_hat, atol=1e-5)
            # the copies are live: they read (half of) their source's share, unlike units read by zeros
            assert exact.g_s[2].weight[8:].abs().sum() > 0 and exact.g_a[6].weight[:, 8:].abs().sum() > 0
            # the noise that lets twins grow apart changes the output only a little
            assert not torch.equal(noisy.g_a(x), exact.g_a(x))
            assert (noisy.g_s(y) - x_hat).abs().max() < 0.05 * x_hat.abs().max()
    # the copies come from the most-read units of the layer
    read = old.g_s[2].weight.detach().reshape(8, -1).norm(dim=1)
    top = int(read.argmax())
    wide = surgery.widen_transforms(old.state_dict(), 9, split=0.0)
    assert torch.allclose(wide["g_s.2.weight"][8, :8], wide["g_s.2.weight"][top, :8])
    assert torch.allclose(wide["g_s.2.weight"][8, :8] * 2, old.g_s[2].weight.detach()[top])

    # the noise scales the copies' distance from their sources (same draws, so exactly)
    exact = surgery.widen_transforms(old.state_dict(), 14, split=0.0)
    lo, hi = (surgery.widen_transforms(old.state_dict(), 14, split=s) for s in (0.02, 0.5))
    for name in ("g_a.0.weight", "g_s.4.weight"):
        assert torch.allclose(hi[name] - exact[name], 25 * (lo[name] - exact[name]), atol=1e-5)

    ck = _trained_from(old, data_dir, tmp_path, N=14, split_units=True, split_noise=0.5)
    assert ck["model"]["g_s.2.weight"].shape == (14, 14, 5, 5)


def test_context_training_grows_a_hyperprior_and_resumes(data_dir, tmp_path):
    from vaecodec.codec import Codec
    from vaecodec.training.context import model_from_context_checkpoint

    w = exported(data_dir, tmp_path)
    out = tmp_path / "ctx"
    args = ["train", str(data_dir), "--out", str(out), "--context", "--init", w, "--patch-size", "64",
            "--batch-size", "2", "--steps", "6", "--max-minutes", "5", "--val-every", "0", "--val-fraction", "0.34"]
    r = CliRunner().invoke(cli.main, args)
    assert r.exit_code == 0, r.output
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file() and (out / "latents.pt").is_file()
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("val" in rec for rec in logs)
    model = model_from_context_checkpoint(out / "last.pt")
    assert float(model.entropy_parameters[-1].weight.detach().abs().sum()) > 0  # the zero-initialised layer learned
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 6
    i = args.index("--steps") + 1
    r = CliRunner().invoke(cli.main, [*args[:i], "8", *args[i + 1:]])  # resume to step 8
    assert r.exit_code == 0, r.output
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 8
    r = CliRunner().invoke(cli.main, ["export", str(out / "best.pt"), "-o", str(tmp_path / "c.safetensors"),
                                      "--model-id", "c@1"])
    assert r.exit_code == 0, r.output
    codec = Codec(weights=str(tmp_path / "c.safetensors"))
    img = natural_like(40, 72, seed=3)
    assert codec.model_id == "c@1" and codec.decode(codec.encode(img, quality=50)).shape == img.shape


def test_joint_training_from_a_checkerboard_model_trains_transforms_and_context(data_dir, tmp_path):
    """--init with a checkerboard model trains its transforms, hyperprior and context together."""
    from vaecodec.codec import Codec
    from vaecodec.model import CheckerboardModel
    from vaecodec.training.export import export, model_from_checkpoint

    torch.manual_seed(0)
    cb = CheckerboardModel(8, 12)
    torch.nn.init.normal_(cb.entropy_parameters[-1].weight, std=1e-3)  # a context that has learned something
    w = tmp_path / "cb.safetensors"
    export(cb, w, model_id="cb@1")
    start = {k: v.float() for k, v in model_from_checkpoint(w).state_dict().items()}
    out = tmp_path / "joint"
    train(config(data_dir, out, N=None, M=None, init=str(w), ema_decay=0), progress=False)
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 4 and ck["model"].keys() == start.keys()
    for name in ("g_a.0.weight", "g_s.6.weight", "h_s.4.weight", "context.weight", "entropy_parameters.4.weight"):
        assert not torch.equal(ck["model"][name], start[name]), name  # every part learned
    train(config(data_dir, out, N=None, M=None, init=str(w), steps=5, ema_decay=0), progress=False)
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 5  # resumed, not restarted
    model = model_from_checkpoint(out / "last.pt")
    assert isinstance(model, CheckerboardModel)
    export(model, tmp_path / "j.safetensors", model_id="j@1")
    codec = Codec(weights=str(tmp_path / "j.safetensors"))
    img = natural_like(40, 72, seed=3)
    assert codec.decode(codec.encode(img, quality=50)).shape == img.shape


def test_widening_a_checkerboard_model_keeps_its_function_context_included(data_dir, tmp_path):
    """--channels with a checkerboard --init grows y, the hyperprior and the context together."""
    from vaecodec.model import CheckerboardModel
    from vaecodec.training.surgery import widen_latents, widen_transforms

    torch.manual_seed(0)
    old = CheckerboardModel(8, 12).eval()
    for p in (old.entropy_parameters[-1].weight, old.entropy_parameters[-1].bias):
        torch.nn.init.normal_(p, std=0.05)  # a context that changes the parameters
    wide = CheckerboardModel(10, 20).eval()
    wide.load_state_dict(widen_transforms(widen_latents(old.state_dict(), 20), 10))
    x = torch.rand(2, 3, 64, 64)
    for lv in (0.0, 4.0, 8.0):
        level = torch.full((2,), lv)
        with torch.no_grad():
            a, b = old(x, level), wide(x, level)
            y = old.g_a(x) * old.gains(level)[0]
            _, s0, m0 = old.hyper_params(y, level, noise=False)
            s0, m0 = old.coded_params(s0, m0)
            s_old, m_old = old.latent_params(y, s0, m0, level)
            yw = wide.g_a(x) * wide.gains(level)[0]
            _, s1, m1 = wide.hyper_params(yw, level, noise=False)
            s1, m1 = wide.coded_params(s1, m1)
            s_new, m_new = wide.latent_params(yw, s1, m1, level)
        assert not torch.allclose(s_old, s0)  # the context does change the old channels' scales
        assert torch.allclose(s_new[:, :12], s_old, atol=1e-5) and torch.allclose(m_new[:, :12], m_old, atol=1e-5)
        assert torch.allclose(s_new[:, 12:], s1[:, 12:]) and torch.allclose(m_new[:, 12:], m1[:, 12:])
        assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
    ck = _trained_from(old, data_dir, tmp_path, N=10, M=20)  # a run from the narrow weights trains the wide model
    assert ck["model"]["context.weight"].shape == (20, 40, 5, 5)
    assert ck["model"]["entropy_parameters.0.weight"].shape == (40, 60, 1, 1)


def test_cli_passes_the_split_noise_to_the_widening(data_dir, tmp_path):
    """`train --split-units --split-noise X` widens with that noise; without it the config's default holds."""
    from vaecodec.training import surgery

    init = tmp_path / "narrow.pt"
    torch.save({"model": HyperpriorModel(8, 12).state_dict()}, init)
    for noise, want in (("0.5", 0.5), (None, surgery.SPLIT_NOISE)):
        out = tmp_path / f"run-{noise}"
        args = ["train", str(data_dir), "--out", str(out), "--init", str(init), "--channels", "14", "12",
                "--split-units", "--patch-size", "64", "--batch-size", "2", "--steps", "1", "--val-fraction", "0"]
        r = CliRunner().invoke(cli.main, args + ([] if noise is None else ["--split-noise", noise]))
        assert r.exit_code == 0, r.output
        cfg = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["config"]
        assert cfg["split_units"] and cfg["split_noise"] == want
