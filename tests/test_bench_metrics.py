"""Tests of the benchmark code itself (``benchmarks/``): metrics, BD-rate, report and a tiny end-to-end run.

None of these needs ``../shared``; the vaecodec end-to-end case skips when the shipped codec
cannot be constructed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import cli, report
from benchmarks.codecs import make_codecs
from benchmarks.crop import match_quality
from benchmarks.memory import run_child, tiled_image
from benchmarks.metrics import bd_rate, bd_rate_polyfit, bpp, ms_ssim, ms_ssim_db, mse, psnr

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [26.0, 29.0, 32.5, 36.0, 40.0]


def test_psnr_of_known_error_values() -> None:
    a = np.zeros((4, 6, 3), np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1
    b = a.copy()
    b[:2] = 10  # half the values off by 10 -> MSE 50
    assert mse(a, b) == pytest.approx(50.0)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50))
    assert psnr(a, a) == math.inf


def test_psnr_is_symmetric_and_does_not_wrap_uint8() -> None:
    a = np.full((2, 2, 3), 250, np.uint8)
    b = np.full((2, 2, 3), 5, np.uint8)
    assert mse(a, b) == pytest.approx(245.0**2)
    assert psnr(a, b) == psnr(b, a)


def test_metrics_refuse_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8))


def test_bpp_counts_whole_file_bits_per_pixel() -> None:
    assert bpp(100, 10, 20) == pytest.approx(4.0)


def test_ms_ssim_is_one_on_identical_images_and_nan_when_too_small() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (170, 180, 3), dtype=np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(ms_ssim(a[:64, :48], a[:64, :48]))
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
    assert ms_ssim_db(1.0) == math.inf


def test_bd_rate_of_identical_curves_is_zero() -> None:
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_of_half_the_rate_is_minus_50_percent() -> None:
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, PSNRS, half, PSNRS) == pytest.approx(-0.5, abs=1e-12)
    assert bd_rate(half, PSNRS, RATES, PSNRS) == pytest.approx(1.0, abs=1e-12)


def test_bd_rate_is_exact_for_log_linear_curves_sampled_at_different_points() -> None:
    def rate(m: float, scale: float) -> float:
        return scale * math.exp(0.25 * m - 8)

    anchor_m = [27.0, 30.0, 33.0, 36.0, 39.0]
    test_m = [28.2, 31.7, 34.1, 37.9]
    value = bd_rate([rate(m, 1) for m in anchor_m], anchor_m, [rate(m, 0.8) for m in test_m], test_m)
    assert value == pytest.approx(-0.2, abs=1e-9)


def test_classic_cubic_bd_rate_agrees_on_exact_cases() -> None:
    m = [26.0, 29.0, 32.0, 35.0, 38.0]
    r = [math.exp(0.3 * v - 9) for v in m]
    assert bd_rate_polyfit(r, m, r, m) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate_polyfit(r, m, [x / 2 for x in r], m) == pytest.approx(-0.5, abs=1e-9)


def test_bd_rate_reproduces_the_published_computation_in_shared_reference() -> None:
    """The VBR-vs-fixed BD-rates in ../shared/reference (computed elsewhere with the same method)."""
    ref = Path(__file__).resolve().parents[2] / "shared" / "reference"
    table = ref / "variable-rate" / "vbr_vs_fixed_bdrate_computed.csv"
    if not table.is_file():
        pytest.skip(f"{table} not present")
    expected = {}
    for line in table.read_text().splitlines():
        cells = line.split(",")
        if cells[0] in ("bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr"):
            expected[cells[0]] = [float(c) for c in cells[2:3] + cells[4:6]]
    assert len(expected) == 2

    def curve(name: str) -> tuple[list[float], list[float]]:
        res = json.loads((ref / "compressai-kodak" / name).read_text())["results"]
        return res["bpp"], res["psnr-rgb"]

    for vbr, fixed in (("bmshj2018-hyperprior", "bmshj2018-hyperprior"), ("mbt2018-mean", "mbt2018-mean")):
        a = curve(f"compressai-{fixed}_mse_cuda.json")
        t = curve(f"{vbr}-vbr-ans.json")
        got = [100 * bd_rate(*a, *t, window=w) for w in (None, (28.0, 33.0), (33.0, 38.0))]
        assert got == pytest.approx(expected[f"{vbr}-vbr"], abs=0.051)


def test_bd_rate_ignores_point_order_and_integrates_only_the_overlap() -> None:
    order = [3, 0, 4, 1, 2]
    shuffled = bd_rate([RATES[i] for i in order], [PSNRS[i] for i in order], [r * 0.7 for r in RATES], PSNRS)
    assert shuffled == pytest.approx(-0.3, abs=1e-12)
    # log-linear curves (interpolated exactly): a test curve covering only the anchor's upper range
    m = [26.0, 29.0, 32.0, 35.0, 38.0]
    r = [math.exp(0.3 * v - 9) for v in m]
    assert bd_rate(r, m, [x * 0.5 for x in r[2:]], m[2:]) == pytest.approx(-0.5, abs=1e-12)
    assert bd_rate(r, m, r, m, window=(30.0, 33.0)) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_is_nan_without_overlap_or_points() -> None:
    assert math.isnan(bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS]))
    assert math.isnan(bd_rate(RATES, PSNRS, [0.5], [30.0]))
    assert math.isnan(bd_rate(RATES, PSNRS, [0.1, 0.2], [math.inf, math.nan]))


def test_match_quality_returns_the_closest_file_size() -> None:
    (jpeg,), _ = make_codecs(["jpeg-420"])
    img = _synthetic(64, 48, seed=1)
    sizes = {q: len(jpeg.encode(img, q)) for q in range(1, 101)}
    target = sizes[40] + 3
    q, data = match_quality(jpeg, img, target)
    assert len(data) == sizes[int(q)]
    assert abs(len(data) - target) == min(abs(s - target) for s in sizes.values())


def test_default_dataset_is_the_bundled_sample_photos() -> None:
    """``python -m benchmarks --out DIR`` (no --dataset) reads assets/, which must hold only photos."""
    from benchmarks.env import REPO_ROOT
    from benchmarks.rd import load_images

    default = cli.parse_args(["--out", "x"]).dataset
    assert default == REPO_ROOT / "assets"
    assert sorted(s.name for s in load_images(default)) == ["chelsea", "coffee"]


def test_tiled_image_has_the_requested_size_and_texture() -> None:
    src = _synthetic(64, 48, seed=2)
    img = tiled_image(src, 0.01)
    assert img.shape[2] == 3
    assert img.shape[0] % 16 == 0 and img.shape[1] % 16 == 0
    assert abs(img.shape[0] * img.shape[1] / 1e6 - 0.01) < 0.003
    assert np.array_equal(img[:48, :64], src)


def test_report_merges_throughput_and_gives_ratios_to_jpeg() -> None:
    def case(codec: str, op: str, median: float) -> dict:
        return {"stats": {"median": median, "rounds": 3, "iqr": 0.0},
                "extra_info": {"codec": codec, "label": codec, "op": op, "batch": 1, "device": "cpu",
                               "threads": 1, "quality": 75, "bpp": 1.0, "megapixels": 2.0}}

    bench = {"machine_info": {"cpu_name": "test cpu", "torch_threads": 1, "load_average": [0.0, 0.0, 0.0],
                              "malloc": "glibc defaults"},
             "benchmarks": [case("jpeg-420", "encode", 0.1), case("jpeg-420", "decode", 0.05),
                            case("vaecodec", "encode", 1.0), case("vaecodec", "decode", 2.0)]}
    rows = {(r["codec"], r["op"]): r for r in report.throughput_rows(bench)}
    assert rows[("jpeg-420", "encode")]["mp_per_s"] == pytest.approx(20.0)
    text = "\n".join(report._throughput_md(bench))
    assert "| vaecodec | cpu | 1 | 1 | 75 | 1.000 | 2.00 | 0.100 | 1.00 | 0.025 |" in text
    assert "malloc: glibc defaults" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the malloc setting is glibc's (Linux)")
def test_memory_child_applies_the_requested_malloc_setting(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", _synthetic(64, 48, seed=3))
    seen = {}
    for setting in ("cli", "glibc"):
        res = run_child(["jpeg-420", "encode", str(tmp_path / "img.npy"), str(tmp_path / "out.jpg"),
                         "--quality", "75", "--malloc", setting], None, 120.0)
        assert res["status"] == "ok", res
        seen[setting] = res["malloc_applied"]
    assert seen == {"cli": "keep_buffers", "glibc": "glibc defaults"}


def _synthetic(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth colour gradient with some texture (compresses like a tiny photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 5 + yy / 7)], axis=2)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_synthetic(64, 48, seed=10 + i)).save(folder / f"img{i}.png")
    return folder


def _run(dataset: Path, out: Path, codecs: str) -> dict:
    rc = cli.main(["--dataset", str(dataset), "--out", str(out), "--codecs", codecs, "--quick",
                   "--no-throughput", "--no-memory", "--no-progress"])
    assert rc == 0
    return json.loads((out / "results.json").read_text())


def test_end_to_end_rd_run_on_two_small_images_with_jpeg_and_webp(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _run(tiny_dataset, out, "jpeg-420,webp")
    for name in ("results.json", "points.csv", "curves.csv", "bd_rate.csv", "report.md", "rd_psnr.png",
                 "rd_msssim.png", "crop.png"):
        assert (out / name).is_file(), name
    assert [i["name"] for i in res["dataset"]["images"]] == ["img0", "img1"]
    n_q = {c: len(v["grid"]) for c, v in res["codecs"].items()}
    assert len(res["points"]) == 2 * sum(n_q.values())
    for p in res["points"]:
        assert p["bpp"] > 0 and p["psnr"] > 15
        assert p["ms_ssim"] is None  # 64x48 is too small for 5-scale MS-SSIM
    jpeg = res["curves"]["jpeg-420"]
    one_q = [p for p in res["points"] if p["codec"] == "jpeg-420" and p["quality"] == jpeg["quality"][0]]
    assert jpeg["bpp"][0] == pytest.approx(np.mean([p["bpp"] for p in one_q]))
    assert jpeg["psnr"][0] == pytest.approx(np.mean([p["psnr"] for p in one_q]))
    row = next(r for r in res["bd_rate"] if r["codec"] == "webp" and r["anchor"] == "jpeg-420"
               and r["metric"] == "psnr")
    assert row["bd_rate_pct"] is not None
    assert res["codecs"]["jpeg-420"]["options"]["optimize"] is True
    assert res["environment"]["versions"]["pillow"]
    assert res["references"] == {}  # not Kodak: no published reference curves
    text = (out / "report.md").read_text()
    assert "BD-rate" in text and "WebP" in text and "crop.png" in text


def test_a_failed_run_leaves_the_previous_results_whole(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    first = _run(tiny_dataset, out, "jpeg-420")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from benchmarks import rd

    def broken(*a, **k):
        raise RuntimeError("stopped mid-sweep")

    monkeypatch.setattr(rd, "sweep", broken)
    with pytest.raises(RuntimeError, match="mid-sweep"):
        cli.main(["--dataset", str(tiny_dataset), "--out", str(out), "--codecs", "jpeg-420", "--quick",
                  "--no-throughput", "--no-memory", "--no-progress"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    # a completed run replaces the files, and drops those it no longer writes
    assert cli.main(["--dataset", str(tiny_dataset), "--out", str(out), "--codecs", "jpeg-420", "--quick",
                     "--no-throughput", "--no-memory", "--no-progress", "--no-crop"]) == 0
    second = json.loads((out / "results.json").read_text())
    assert second["timing_s"] != first["timing_s"] and "crop" not in second["timing_s"]
    assert not (out / "crop.png").exists() and (out / "report.md").exists()
    assert not (tmp_path / ".out.partial").exists()  # no staging folder left behind


@pytest.fixture
def needs_vaecodec() -> None:
    try:
        make_codecs(["vaecodec"])
    except Exception as exc:
        pytest.skip(f"vaecodec codec not constructible: {exc}")


@pytest.mark.slow
@pytest.mark.usefixtures("needs_vaecodec")
def test_end_to_end_rd_run_with_vaecodec(tiny_dataset: Path, tmp_path: Path) -> None:
    res = _run(tiny_dataset, tmp_path / "out", "vaecodec,jpeg-420")
    assert {p["codec"] for p in res["points"]} == {"vaecodec", "jpeg-420"}
    assert res["codecs"]["vaecodec"]["options"]["model_id"]
    assert any(r["anchor"] == "vaecodec" for r in res["bd_rate"])


def test_vaecodec_package_never_imports_benchmarks() -> None:
    pkg = Path(__file__).resolve().parent.parent / "vaecodec"
    pattern = re.compile(r"^\s*(from|import)\s+benchmarks\b", re.MULTILINE)
    assert [p.name for p in pkg.rglob("*.py") if pattern.search(p.read_text())] == []


def test_busy_note_prefers_the_sampled_load_over_the_lagging_load_average() -> None:
    from benchmarks.env import busy_note, other_cpu_load

    # right after a training job ended: the load average still reads high, the CPUs are idle
    assert busy_note({"cpu_count": 2, "load_average_1_5_15min": [1.7, 1.3, 1.3], "other_cpu_load": 0.1}) is None
    assert "1.90 of 2 CPUs" in busy_note({"cpu_count": 2, "other_cpu_load": 1.9})
    assert "load average 1.70" in busy_note({"cpu_count": 2, "load_average_1_5_15min": [1.7, 1.3, 1.3]})
    assert busy_note({"cpu_count": 2, "load_average_1_5_15min": [0.2, 0.1, 0.1]}) is None
    load = other_cpu_load(0.2)
    assert load is None or load >= 0.0


@pytest.mark.slow
@pytest.mark.usefixtures("needs_vaecodec")
def test_the_refine_variant_runs_only_by_name(tiny_dataset: Path, tmp_path: Path) -> None:
    by_default, _ = make_codecs(None)
    assert "vaecodec-refine" not in {c.name for c in by_default}
    res = _run(tiny_dataset, tmp_path / "out", "vaecodec,vaecodec-refine")
    opts = res["codecs"]["vaecodec-refine"]["options"]
    assert opts["refine"] > 0 and res["codecs"]["vaecodec"]["options"]["refine"] == 0
    rows = {(r["codec"], r["anchor"], r["metric"]) for r in res["bd_rate"]}
    assert ("vaecodec-refine", "vaecodec", "psnr") in rows
