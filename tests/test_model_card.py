"""The model card generator (benchmarks/model_card.py) on a synthetic log and results, without ../shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import model_card as mc


def _train(step: int, psnr: float, patch: int = 128) -> dict[str, Any]:
    return {"loss": 100.0 / (step + 1), "bpp": 0.8, "psnr": psnr, "aux": 1.0, "gnorm": 2.0, "step": step,
            "lr": 5e-4, "patch": patch, "time": 3.6 * step}


def _val(step: int, score: float) -> dict[str, Any]:
    return {"step": step, "val": {"0": {"bpp": 0.2, "psnr": 25.0, "loss": 1.0},
                                  "7": {"bpp": 1.5, "psnr": 33.0, "loss": 9.0}, "score": score,
                                  "objective": score}}


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _results(folder: Path) -> None:
    folder.mkdir()
    curve = {"name": "vaecodec", "label": "vaecodec", "kind": "measured", "quality": [0.0, 50.0, 100.0],
             "bpp": [0.125, 0.5, 1.25], "psnr": [27.5, 31.25, 35.75], "ms_ssim": [0.9, 0.95, 0.99],
             "ms_ssim_db": [10.0, 13.01, 20.0], "source": ""}
    x = 100.0 * (1 / 1.3 - 1)  # the reference against vaecodec: vaecodec is +30 % against it
    rows = [{"codec": "vaecodec", "anchor": "jpeg-420", "metric": "psnr", "bd_rate_pct": -42.5,
             "overlap_lo": 27.5, "overlap_hi": 35.0},
            {"codec": mc.HYPERPRIOR, "anchor": "vaecodec", "metric": "psnr", "bd_rate_pct": x,
             "overlap_lo": 28.0, "overlap_hi": 35.75}]
    results = {"environment": {"date_utc": "2030-01-01", "git_commit": None, "cpu": "Test CPU",
                               "command": "python -m benchmarks --dataset kodak --out r"},
               "dataset": {"name": "kodak", "path": "kodak", "kodak": True,
                           "images": [{"name": f"kodim{i:02d}"} for i in range(1, 25)]},
               "settings": {"quick": False}, "codecs": {"vaecodec": {"options": {"model_id": "test@1"}}},
               "curves": {"vaecodec": curve}, "references": {}, "bd_rate": rows}
    (folder / "results.json").write_text(json.dumps(results))


def _weights(path: Path, step: int = 1000) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"g_a.0.weight": np.zeros((4, 3, 5, 5), np.float16),
               "gaussian_conditional._quantized_cdf": np.zeros((3, 7), np.int32)}, str(path),
              metadata={"model_id": "test@1", "N": "4", "M": "6", "levels": "8", "step": str(step), "averaged": "ema",
                        "train_seconds": "3600", "format": "vaecodec-weights-1"})


def test_card_from_synthetic_log_and_results(tmp_path: Path) -> None:
    log = [_train(s, 20.0 + s / 100, 128 if s < 600 else 256) for s in range(25, 1001, 25)]
    log[20:20] = [_train(s, 99.0) for s in (525, 550)]  # a stopped run, overwritten after the resume
    log.insert(16, _val(400, 5.0))
    log.append(_val(800, 4.0))
    log_path = tmp_path / "run" / "log.jsonl"
    log_path.parent.mkdir()
    _write_jsonl(log_path, log)
    with log_path.open("a") as f:
        f.write('{"loss": 1.0, "step": 10')  # a line still being written
    out = tmp_path / "assets"
    out.mkdir()
    _write_jsonl(out / mc.LOG_NAME, [_train(100, 0.5), _val(60, 6.0), _train(10, 1.0)])  # an earlier run
    _results(tmp_path / "results")
    weights = tmp_path / "w" / "test-1.safetensors"
    _weights(weights)
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"hardware": "Test CPU, 2 cores", "weights_from": "best.pt at step 800"}))

    argv = ["--log", str(log_path), "--results", str(tmp_path / "results"), "--weights", str(weights),
            "--out", str(out), "--notes", str(notes), "--train-data", str(tmp_path / "no-data")]
    assert mc.main(argv) == 0

    merged = mc.read_jsonl(out / mc.LOG_NAME)
    keys = [(r["step"], mc.record_kind(r)) for r in merged]
    assert keys == sorted(keys, key=lambda k: (k[0], k[1] != "train"))
    assert len(keys) == len(set(keys))
    assert (60, "val") in keys and (10, "train") in keys  # kept from the earlier run
    assert (400, "val") in keys and (800, "val") in keys
    train_steps = [s for s, k in keys if k == "train"]
    assert train_steps == [10, *range(100, 1001, 100)]  # the first record of each 100-step bucket
    by_step = {r["step"]: r for r in merged if mc.record_kind(r) == "train"}
    assert by_step[100]["psnr"] == 21.0  # the live log wins over the earlier copy
    assert by_step[500]["psnr"] == 25.0 and all(r["psnr"] != 99.0 for r in merged if "psnr" in r)
    assert mc.compact_log([*merged, *mc.read_jsonl(log_path)]) == merged  # merging again changes nothing

    card = (out / mc.CARD_NAME).read_text()
    for fact in ("| 0 | 0 | 0.0018 | 0.1250 | 27.50 | 0.9000 | 10.00 |",  # quality, level, λ, bpp, PSNR...
                 "| 100 | 7 | 0.1800 | 1.2500 | 35.75 | 0.9900 | 20.00 |",
                 "-42.5 % over 27.50–35.00", "+30.0 % over 28.00–35.75", "**met**", "**not met**",
                 "Test CPU, 2 cores", "best.pt at step 800", "| steps | 1000 | log |", "1.00 h",
                 "128×128 px", "256×256 px", "| 800 (best) |", "test@1", "| 4, 6 |"):
        assert fact in card, fact
    # safetensors returns its metadata in hash order; the card sorts it, so regenerating is stable
    meta_rows = [line.split("`")[1] for line in card.splitlines() if line.startswith("| metadata `")]
    assert meta_rows == sorted(meta_rows) == ["averaged", "format", "step", "train_seconds"]
    mean_row = next(line for line in card.splitlines() if line.startswith("| CompressAI mbt2018-mean"))
    assert mc.NOT_MEASURED in mean_row  # no such BD-rate in the results
    assert "MS-SSIM" in card and f"| {mc.NOT_MEASURED} |" in card  # the MS-SSIM BD-rates are absent
    assert "not the Kodak measurement" not in card
    assert "(pass `weights_from`" not in card
    assert (out / mc.CURVE_PNG).stat().st_size > 0 and (out / mc.RD_PNG).stat().st_size > 0


def test_card_without_results_says_not_measured(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    _weights(weights)
    log = tmp_path / "log.jsonl"
    _write_jsonl(log, [_train(25, 12.0), _train(50, 13.0)])
    card = mc.build(log, None, weights, tmp_path / "out", train_data=tmp_path / "none").read_text()
    target_rows = [line for line in card.splitlines() if line.startswith(("| Pillow JPEG", "| CompressAI"))]
    assert len(target_rows) == 3 and all(mc.NOT_MEASURED in line for line in target_rows)
    assert f"Kodak RD table: {mc.NOT_MEASURED}" in card
    assert "| batch size | not recorded |" in card
    assert not (tmp_path / "out" / mc.RD_PNG).exists()


def test_training_curve_is_split_where_the_log_has_a_hole() -> None:
    pts = [(float(s), 1.0) for s in (*range(0, 1000, 25), *range(14000, 15000, 25))]
    segs = mc._segments(pts)
    assert [len(s) for s in segs] == [40, 40]
    assert segs[0][-1][0] == 975 and segs[1][0][0] == 14000
    assert mc._segments(pts[:40]) == [pts[:40]]  # an even log stays one piece
    assert mc._segments([]) == []


def test_partial_log_records_stay_in_the_log_but_off_the_curves():
    records = [{"step": 25, "loss": 2.0, "bpp": 0.9, "psnr": 32.0, "patch": 128, "time": 10.0},
               {"step": 50, "loss": 1.0, "bpp": 0.4, "psnr": 15.0, "patch": 128, "time": 20.0, "partial": True},
               {"step": 75, "loss": 2.1, "bpp": 0.9, "psnr": 32.1, "patch": 128, "time": 30.0}]
    facts = mc.run_facts(records)
    assert [r["step"] for r in facts["train"]] == [25, 50, 75]
    assert [r["step"] for r in facts["curve"]] == [25, 75]


def test_setup_rows_name_the_level_balance():
    from benchmarks.model_card import _setup_rows

    cfg = {"metric": "mse", "aux_lr": 1e-3, "clip": 1.0, "seed": 0, "val_every_s": 900.0, "precision": "bf16"}

    def objective(config):
        facts = {"seconds": None, "steps": 10, "patch_phases": [], "lr_max": None}
        return dict((r[0], r[1]) for r in _setup_rows(facts, {"config": config}, {}))["objective"]

    plain, weighted = objective(cfg), objective({**cfg, "level_balance": 0.5})
    assert "averaged unweighted" in plain
    assert "(λ/λ_mid)^-0.5 (--level-balance 0.5)" in weighted


def test_card_leaves_out_log_records_past_the_weights(tmp_path: Path) -> None:
    # the run went on after these weights were shipped: the card describes the weights' step
    log_path = tmp_path / "run" / "log.jsonl"
    log_path.parent.mkdir()
    _write_jsonl(log_path, [_train(s, 20.0) for s in range(25, 1001, 25)] + [_val(400, 5.0), _val(800, 4.0)])
    weights = tmp_path / "w" / "test-1.safetensors"
    _weights(weights, step=500)
    out = tmp_path / "assets"
    assert mc.main(["--log", str(log_path), "--weights", str(weights), "--out", str(out),
                    "--train-data", str(tmp_path / "no-data")]) == 0
    assert max(r["step"] for r in mc.read_jsonl(out / mc.LOG_NAME)) == 500
    card = (out / mc.CARD_NAME).read_text()
    assert "| steps | 500 | log |" in card and "| 800 " not in card


def _val(step: int, score: float, objective: float | None = None, **extra: object) -> dict:
    val: dict = {"0": {"bpp": 0.1, "psnr": 26.0, "loss": score}, "score": score}
    if objective is not None:
        val["objective"] = objective
    return {"step": step, "val": val, "lambdas": [0.001, 0.01], **extra}


def test_best_validation_follows_the_objective_the_run_picks_by() -> None:
    plain = [_val(100, 1.70), _val(200, 1.60, 1.60)]  # before the balance: objective = score
    balanced = [_val(300, 1.75, 0.97), _val(400, 1.74, 0.99), _val(500, 1.76, 0.96, level_balance=0.5)]
    # the plain score is lowest at step 200, but the run picked best.pt by the weighted objective
    assert mc.best_validation(plain + balanced)["step"] == 500
    assert mc.best_validation(plain)["step"] == 200
    # a change of ladder starts over, as training's `best` does
    reladdered = [*balanced, {**_val(600, 1.9, 1.5, level_balance=0.5), "lambdas": [0.001, 0.02]}]
    assert mc.best_validation(reladdered)["step"] == 600
    assert mc.best_validation([]) is None


def _bench_case(codec: str, op: str, median_s: float, batch: int = 1, device: str = "cpu") -> dict[str, Any]:
    return {"extra_info": {"codec": codec, "label": {"vaecodec:msh@14": "vaecodec (msh@14)"}.get(codec, codec),
                           "op": op, "batch": batch, "device": device, "threads": 2, "quality": 75,
                           "bpp": 1.0, "megapixels": 2.0},
            "stats": {"median": median_s, "rounds": 3, "iqr": 0.0}}


def test_speed_section_divides_the_base_models_speed_by_each_models(tmp_path: Path) -> None:
    _results(tmp_path / "results")
    cases = [_bench_case("vaecodec", "encode", 1.6), _bench_case("vaecodec", "decode", 2.0),
             _bench_case("vaecodec:msh@14", "encode", 1.28), _bench_case("vaecodec:msh@14", "decode", 1.6),
             _bench_case("jpeg-420", "encode", 0.01), _bench_case("jpeg-420", "decode", 0.008),
             _bench_case("vaecodec", "decode", 9.0, batch=8)]  # not batch 1: left out
    (tmp_path / "results" / "throughput.json").write_text(json.dumps(
        {"machine_info": {"cpu_name": "Test CPU", "torch_threads": 2, "load_average": [0.1, 0.2, 0.3]},
         "benchmarks": cases}))
    weights = tmp_path / "w.safetensors"
    _weights(weights)
    card = mc.build(None, tmp_path / "results", weights, tmp_path / "out", train_data=tmp_path / "none").read_text()
    assert "### Speed" in card and "Test CPU" in card
    assert "| vaecodec `test@1` | 2 | 1.25 | 1.00 | 1.25 | 1.25 |" in card  # 2 MP in 1.6 s and 2.0 s
    assert "| vaecodec (msh@14) | 2 | 1.56 | 1.25 | 1.00 | 1.00 |" in card
    assert "| jpeg-420 | 2 | 200.00 | 250.00 | – | – |" in card


def test_card_without_throughput_has_no_speed_section(tmp_path: Path) -> None:
    _results(tmp_path / "results")
    weights = tmp_path / "w.safetensors"
    _weights(weights)
    card = mc.build(None, tmp_path / "results", weights, tmp_path / "out", train_data=tmp_path / "none").read_text()
    assert "### Speed" not in card
