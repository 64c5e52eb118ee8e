"""What else the VAE knows (vaecodec.analysis): bits map, ranking, latent map, samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ASSETS, natural_like, tiny_checkerboard
from PIL import Image

from vaecodec import analysis, container
from vaecodec.codec import Codec

#: A rANS stream ends with the coder's 64-bit state: at most this many bits more than the information.
FLUSH_BITS = 64


@pytest.fixture(scope="module")
def ctx_codec():
    return Codec.from_model(tiny_checkerboard(seed=2), model_id="ctx@0", tag=b"ctx0")


def _stream_bits(data: bytes) -> tuple[int, int]:
    vf = container.unpack(data)
    return 8 * (len(vf.z) + sum(len(s) for s in vf.y)), 1 + len(vf.y)


# ---------------------------------------------------------------------------- bits map


def test_information_is_the_size_of_a_rans_stream_escapes_included(tiny_codec):
    coder = tiny_codec.coder.y_coder
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(coder.cdfs), size=5000)
    sym = np.rint(rng.normal(0, 3, size=5000)).astype(np.int32)
    sym[::97] = rng.integers(-3000, 3000, size=sym[::97].size)  # far outside any table: escape-coded
    bits = analysis.information(coder, sym, idx).sum()
    stream = 8 * len(coder.encode(sym, idx))
    assert 0 <= stream - bits <= FLUSH_BITS


@pytest.mark.parametrize("which", ["tiny", "ctx", "shipped"])
@pytest.mark.parametrize(("size", "quality"), [((64, 64), 0.0), ((100, 150), 75.0), ((1, 1), 100.0)])
def test_bits_map_sums_to_the_coded_streams(request, which, size, quality):
    codec = request.getfixturevalue({"tiny": "tiny_codec", "ctx": "ctx_codec", "shipped": "shipped_codec"}[which])
    img = natural_like(*size, seed=7)
    bm = codec.bits_map(img, quality=quality)
    stream, n = _stream_bits(codec.encode(img, quality=quality))
    assert 0 <= stream - bm.bits <= FLUSH_BITS * n
    assert bm.bpp.shape == size
    assert bm.bpp.sum() + bm.padding_bits == pytest.approx(bm.bits)
    assert bm.padding_bits >= 0


def test_bits_map_matches_a_real_file_within_a_fraction_of_a_percent(shipped_codec):
    img = np.asarray(Image.open(ASSETS / "coffee.png").convert("RGB"))  # 600×400, a real photo
    bm = shipped_codec.bits_map(img, quality=75)
    data = shipped_codec.encode(img, quality=75)
    stream, _ = _stream_bits(data)
    assert 0 <= stream - bm.bits < 0.001 * stream
    assert bm.mean_bpp == pytest.approx(bm.bits / img[..., 0].size)
    # the reconstruction is what decoding the file gives
    assert np.array_equal(bm.reconstruction, shipped_codec.decode(data))
    err = np.sqrt(np.mean((bm.reconstruction.astype(float) - img.astype(float)) ** 2, axis=-1))
    assert np.allclose(bm.error, err)


def test_bits_map_puts_the_bits_where_the_detail_is(shipped_codec):
    img = np.full((128, 256, 3), 120, np.uint8)
    img[:, 128:] = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    bm = shipped_codec.bits_map(img, quality=50)
    assert bm.bpp[:, 128:].mean() > 10 * bm.bpp[:, :128].mean()


@pytest.mark.parametrize("channels", [1, 4])
def test_bits_map_of_grayscale_and_alpha_images(shipped_codec, channels):
    img = natural_like(80, 96, seed=3, channels=1 if channels == 1 else 3)
    if channels == 4:
        img = np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])
    bm = shipped_codec.bits_map(img, quality=40)
    assert bm.reconstruction.shape == img.shape
    assert np.array_equal(bm.reconstruction, shipped_codec.decode(shipped_codec.encode(img, quality=40)))
    fig = analysis.draw_bits_map(bm, img, side=128)
    assert fig.width > 3 * 128 and fig.mode == "RGB"


def test_bits_map_refuses_a_bad_quality(tiny_codec):
    with pytest.raises(ValueError, match="quality"):
        tiny_codec.bits_map(natural_like(16, 16), quality=101)


# ---------------------------------------------------------------------------- sampling


def test_draw_symbols_follows_the_coders_table(tiny_codec):
    coder = tiny_codec.coder.y_coder
    t = len(coder.cdfs) // 2
    n = int(coder.lengths[t])
    cdf = np.asarray(coder.cdfs[t][:n], dtype=np.float64)
    pmf = np.diff(cdf[: n - 1]) / cdf[n - 2]  # the table without its escape slot
    sym = analysis.draw_symbols(coder, np.full(200_000, t), np.random.default_rng(0))
    freq = np.bincount(sym - coder.offsets[t], minlength=n - 2) / sym.size
    assert freq.shape == pmf.shape
    assert np.abs(freq - pmf).max() < 0.005


@pytest.mark.parametrize("which", ["tiny", "ctx", "shipped"])
def test_samples_are_deterministic_for_a_seed(request, which):
    codec = request.getfixturevalue({"tiny": "tiny_codec", "ctx": "ctx_codec", "shipped": "shipped_codec"}[which])
    a = analysis.sample(codec, 2, quality=60, seed=3, size=(48, 80))
    b = analysis.sample(codec, 2, quality=60, seed=3, size=(48, 80))
    c = analysis.sample(codec, 2, quality=60, seed=4, size=(48, 80))
    assert [s.shape for s in a] == [(48, 80, 3)] * 2 and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], a[1])
    grid = analysis.draw_samples(a)
    assert grid.size[0] > 2 * 80


def test_samples_of_the_shipped_model_are_not_flat(shipped_codec):
    s = analysis.sample(shipped_codec, 1, quality=75, seed=0, size=(64, 64))[0]
    assert s.std() > 5  # colour fields and textures, not a constant


def test_sample_refuses_bad_arguments(tiny_codec):
    with pytest.raises(ValueError, match="n >= 1"):
        analysis.sample(tiny_codec, 0)
    with pytest.raises(ValueError, match="quality"):
        analysis.sample(tiny_codec, 1, quality=-1)


# ---------------------------------------------------------------------------- ranking


def test_planted_anomalies_rank_above_clean_images(shipped_codec):
    from benchmarks.anomaly import plant

    rng = np.random.default_rng(0)
    clean = [(f"clean{i}", natural_like(96, 128, seed=i)) for i in range(6)]
    odd = [("noise", plant(natural_like(96, 128, seed=10), "noise", rng)),
           ("jpeg", plant(natural_like(96, 128, seed=11), "jpeg", rng)),
           ("text", plant(natural_like(96, 128, seed=12), "text", rng))]
    ranked = analysis.rank(clean + odd, codec=shipped_codec)
    assert {r.name for r in ranked[:3]} == {"noise", "jpeg", "text"}
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    top = ranked[0].as_dict()
    assert set(top) >= {"file", "score", "bpp", "mse", "psnr"}
    sheet = analysis.draw_sheet(ranked[:4], dict(clean + odd), side=48, cols=2)
    assert sheet.width < sheet.height < 4 * sheet.width


def test_rank_scores_do_not_depend_on_image_size(shipped_codec):
    img = natural_like(128, 128, seed=5)
    wide = np.concatenate([img, img[:, ::-1]], 1)
    tiled = np.concatenate([wide, wide[::-1]], 0)  # mirrored: the same content, four times the pixels
    (a,), (b,) = analysis.rank([("a", img)], codec=shipped_codec), analysis.rank([("b", tiled)], codec=shipped_codec)
    assert b.bpp == pytest.approx(a.bpp, rel=0.1) and b.mse == pytest.approx(a.mse, rel=0.1)


def test_auc_of_the_benchmark():
    from benchmarks.anomaly import auc

    assert auc(np.array([3, 4]), np.array([1, 2])) == 1.0
    assert auc(np.array([1, 2]), np.array([3, 4])) == 0.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5


# ---------------------------------------------------------------------------- latents and the map


def test_latents_have_the_models_shapes(shipped_codec):
    img = natural_like(100, 150, seed=1)
    lat = shipped_codec.latents(img)
    assert lat.y.shape == (192, 8, 12) and lat.z.shape == (128, 2, 3) and lat.gain.shape == (192,)
    t = shipped_codec.latents(img, output="torch")
    assert np.allclose(t.y.numpy(), lat.y)
    # the gain-free latents do not change with the quality
    lo = shipped_codec.latents(img, quality=10)
    assert np.allclose(lo.y / lo.gain[:, None, None], lat.y / lat.gain[:, None, None], atol=1e-4)


def test_near_duplicates_land_nearer_each_other_than_unrelated_images(shipped_codec):
    coffee = np.asarray(Image.open(ASSETS / "coffee.png").convert("RGB"))
    cat = np.asarray(Image.open(ASSETS / "chelsea.png").convert("RGB"))
    crop = coffee[100:228, 200:360]
    named = [("crop", crop), ("shifted", coffee[103:231, 205:365]),  # a crop shifted by a few pixels
             ("brighter", np.clip(crop.astype(int) + 12, 0, 255).astype(np.uint8)),
             ("coffee2", coffee[250:378, 0:160]), ("coffee3", coffee[0:128, 400:560]),
             ("cat1", cat[0:128, 0:160]), ("cat2", cat[150:278, 200:360]), ("synthetic", natural_like(128, 160))]
    emb = analysis.embed(named, codec=shipped_codec)
    for space in (emb.coords, emb.descriptors):
        d = np.linalg.norm(space[:, None] - space[None], axis=-1)
        assert max(d[0, 1], d[0, 2]) < d[0, 3:].min()
    assert emb.coords.shape == (8, 2) and sum(emb.explained) <= 1.0
    assert emb.as_dicts()[0]["file"] == "crop"
    m = analysis.draw_map(emb, dict(named), size=256, side=32)
    assert m.size == (256, 256)


# ---------------------------------------------------------------------------- command line


@pytest.fixture
def run(shipped_codec, monkeypatch):
    from click.testing import CliRunner

    from vaecodec import cli

    monkeypatch.setattr(cli, "_codec", lambda *a, **k: shipped_codec)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli.main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def folder(tmp_path):
    from benchmarks.anomaly import plant

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        Image.fromarray(natural_like(64, 96, seed=i)).save(d / f"clean{i}.png")
    Image.fromarray(plant(natural_like(64, 96, seed=9), "noise", np.random.default_rng(0))).save(d / "odd.png")
    return d


def test_cli_inspect_writes_the_figure_and_the_totals(run, tmp_path, shipped_codec):
    src = tmp_path / "photo.png"
    Image.fromarray(natural_like(48, 64, seed=2)).save(src)
    r = run("inspect", src, "--json", "-q", 30)
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert Image.open(tmp_path / "photo.bits.png").width > 3 * 64
    assert rec["bits"] == pytest.approx(shipped_codec.bits_map(natural_like(48, 64, seed=2), quality=30).bits, abs=0.1)
    r = run("inspect", src)
    assert r.exit_code == 1 and "already exists" in r.stderr


def test_cli_rank_lists_the_odd_image_first(run, folder, tmp_path):
    r = run("rank", folder, "--json", "--top", 2, "--sheet", tmp_path / "sheet.png")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 2 and recs[0]["file"].endswith("odd.png") and recs[0]["rank"] == 1
    assert (tmp_path / "sheet.png").exists()
    (folder / "broken.png").write_bytes(b"not an image")
    r = run("rank", folder)
    assert r.exit_code == 1 and "broken.png" in r.stderr and "odd.png" in r.stdout.splitlines()[0]
    r = run("rank", tmp_path / "missing")
    assert r.exit_code == 1 and "not a folder" in r.stderr


def test_cli_embed_and_sample(run, folder, tmp_path):
    r = run("embed", folder, "--json", "-o", tmp_path / "map.png")
    assert r.exit_code == 0, r.stderr
    assert [Path(json.loads(line)["file"]).name for line in r.stdout.splitlines()] == sorted(
        p.name for p in folder.iterdir())
    assert Image.open(tmp_path / "map.png").size == (1024, 1024)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        assert run("sample", "-n", 2, "--size", 32, 48, "--seed", 5, "-o", out).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
