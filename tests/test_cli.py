"""The command line through click's CliRunner (tiny model patched in): exit codes, streams, files."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import REPO, natural_like
from vaecodec import cli
from vaecodec.errors import VaecodecError


@pytest.fixture
def run(tiny_codec, monkeypatch):
    monkeypatch.setattr(cli, "_codec", lambda *a, **k: tiny_codec)
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli.main, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(natural_like(40, 56)).save(path)
    return path


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_encode_decode_default_names(run, png):
    r = run("encode", png)
    assert r.exit_code == 0 and r.stdout == ""
    vae = png.with_suffix(".vae")
    assert vae.read_bytes()[:4] == b"\x89VAE"
    vae.rename(png.with_name("other.vae"))
    r = run("decode", png.with_name("other.vae"))
    assert r.exit_code == 0
    assert Image.open(png.with_name("other.png")).size == (56, 40)


def test_quality_and_verbose(run, png, tmp_path):
    r = run("encode", png, "-o", tmp_path / "a.vae", "-q", 10, "-v")
    assert r.exit_code == 0
    assert "bpp" in r.stderr and "quality 10" in r.stderr
    r = run("info", tmp_path / "a.vae", "--json")
    info = json.loads(r.stdout)
    assert info["quality"] == 10 and info["width"] == 56 and info["height"] == 40 and info["pixel_format"] == "RGB8"


def test_many_inputs_go_to_a_folder(run, tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(natural_like(20, 30, seed=i)).save(p)
        paths.append(p)
    r = run("encode", *paths, "-o", tmp_path / "out")
    assert r.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.vae", "im1.vae", "im2.vae"]
    r = run("decode", *sorted((tmp_path / "out").iterdir()), "-o", tmp_path / "dec")
    assert r.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["im0.png", "im1.png", "im2.png"]


def test_stdin_and_stdout(run, png):
    r = run("encode", "-", "-o", "-", input=png.read_bytes())
    assert r.exit_code == 0 and r.stdout_bytes[:4] == b"\x89VAE"
    r2 = run("decode", "-", "-o", "-", input=r.stdout_bytes)
    assert r2.exit_code == 0
    assert Image.open(io.BytesIO(r2.stdout_bytes)).format == "PNG"


@pytest.mark.parametrize(("suffix", "fmt"), [(".webp", "WEBP"), (".tif", "TIFF"), (".bmp", "BMP"), (".ppm", "PPM")])
def test_decode_format_follows_extension(run, png, tmp_path, suffix, fmt):
    run("encode", png, "-o", tmp_path / "a.vae")
    r = run("decode", tmp_path / "a.vae", "-o", tmp_path / f"a{suffix}")
    assert r.exit_code == 0
    assert Image.open(tmp_path / f"a{suffix}").format == fmt


def test_refuses_to_overwrite_without_force(run, png, tmp_path):
    out = tmp_path / "a.vae"
    out.write_bytes(b"precious")
    r = run("encode", png, "-o", out)
    assert r.exit_code == 1 and "already exists" in one_error_line(r)
    assert out.read_bytes() == b"precious"
    r = run("encode", png, "-o", out, "--force")
    assert r.exit_code == 0 and out.read_bytes()[:4] == b"\x89VAE"


def test_never_overwrites_its_input(run, png):
    r = run("encode", png, "-o", png, "--force")
    assert r.exit_code == 1 and "input" in one_error_line(r)
    assert Image.open(png).size == (56, 40)


def test_failed_encode_leaves_no_output(run, png, tmp_path, monkeypatch, tiny_codec):
    def boom(*a, **k):
        raise VaecodecError("simulated failure")

    monkeypatch.setattr(tiny_codec, "encode", boom)
    r = run("encode", png, "-o", tmp_path / "x.vae")
    assert r.exit_code == 1
    assert not (tmp_path / "x.vae").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_write_is_atomic(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), cli.atomic_output(target) as f:
        f.write(b"partial")
        raise RuntimeError
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.fixture
def bad_files(run, png, tmp_path):
    run("encode", png, "-o", tmp_path / "good.vae")
    good = (tmp_path / "good.vae").read_bytes()
    files = {
        "truncated": good[: len(good) // 2],
        "flipped": good[:30] + bytes([good[30] ^ 0x10]) + good[31:],
        "renamed png": png.read_bytes(),
        "empty": b"",
    }
    paths = {}
    for name, data in files.items():
        p = tmp_path / (name.replace(" ", "_") + ".vae")
        p.write_bytes(data)
        paths[name] = p
    paths["missing"] = tmp_path / "missing.vae"
    paths["folder"] = tmp_path
    return paths


@pytest.mark.parametrize("case", ["truncated", "flipped", "renamed png", "empty", "missing", "folder"])
@pytest.mark.parametrize("command", ["decode", "info"])
def test_bad_inputs_give_exit_1_and_one_line(run, bad_files, case, command, tmp_path):
    args = [command, bad_files[case]] + (["-o", tmp_path / "out.png"] if command == "decode" else [])
    r = run(*args)
    assert r.exit_code == 1
    line = one_error_line(r)
    assert str(bad_files[case].name) in line or str(bad_files[case]) in line
    assert not (tmp_path / "out.png").exists()


def test_encode_bad_image_gives_exit_1(run, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"junk")
    r = run("encode", tmp_path / "junk.png")
    assert r.exit_code == 1 and "junk.png" in one_error_line(r)


def test_many_files_continue_past_an_error(run, png, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"junk")
    r = run("encode", tmp_path / "junk.png", png, "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert (tmp_path / "out" / "photo.vae").exists()


def test_usage_errors_exit_2(run, png):
    assert run("encode", png, "-q", 50, "--target-bpp", 1).exit_code == 2
    assert run("encode", png, "-q", 101).exit_code == 2


def test_decode_alpha_to_jpeg_is_refused(run, tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.dstack([natural_like(16, 16), np.full((16, 16), 7, np.uint8)]), "RGBA").save(p)
    run("encode", p)
    r = run("decode", tmp_path / "a.vae", "-o", tmp_path / "a.jpg")
    assert r.exit_code == 1 and "alpha" in one_error_line(r)
    r = run("decode", tmp_path / "a.vae", "-o", tmp_path / "b.png")
    assert np.asarray(Image.open(tmp_path / "b.png"))[..., 3].max() == 7


def test_version_reports_cuda():
    r = CliRunner().invoke(cli.main, ["--version"])
    assert r.exit_code == 0 and "vaecodec" in r.stdout and "torch" in r.stdout and "CUDA" in r.stdout


def test_version_prints_no_warning_and_does_not_import_compressai():
    from importlib.metadata import version

    code = (
        "import sys\n"
        "from vaecodec.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code in (None, 0), e.code\n"
        "assert 'compressai' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning shown, whatever the caller's setting
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert f"compressai {version('compressai')}" in r.stdout


def info_fields(block: str) -> dict[str, str]:
    lines = block.splitlines()
    assert all(line.startswith("  ") and ": " in line for line in lines[1:]), block
    return {"file": lines[0], **dict(line.strip().split(": ", 1) for line in lines[1:])}


def test_info_runs_without_torch(run, png, tmp_path):
    run("encode", png, "-o", tmp_path / "a.vae")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
        "from vaecodec.cli import main\n"
        f"main(['info', {str(tmp_path / 'a.vae')!r}, {str(tmp_path / 'a.vae')!r}])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.strip().split("\n\n")
    assert len(blocks) == 2 and info_fields(blocks[0])["size"] == "56x40"


@pytest.fixture
def two_vae(run, png, tmp_path):
    paths = [tmp_path / "a.vae", tmp_path / "b.vae"]
    for p, q in zip(paths, (10, 90)):
        assert run("encode", png, "-o", p, "-q", q).exit_code == 0
    return paths


def test_info_prints_a_readable_block_per_file(run, two_vae):
    r = run("info", *two_vae)
    assert r.exit_code == 0 and r.stderr == ""
    assert "{" not in r.stdout  # not a Python dict
    blocks = r.stdout.strip().split("\n\n")
    assert len(blocks) == 2
    for block, path, q in zip(blocks, two_vae, (10, 90)):
        f = info_fields(block)
        assert f["file"] == str(path)
        assert (f["size"], f["pixel format"], f["quality"]) == ("56x40", "RGB8", str(q))
        assert f["model"].startswith("tiny@0 (weights tag ")
        assert f["file size"].startswith(f"{path.stat().st_size} bytes, ")
        assert re.fullmatch(r"z \d+, y \d+ \(\d+ chunks?\) bytes", f["streams"]), f["streams"]


def test_info_json_is_one_object_per_line(run, two_vae):
    r = run("info", *two_vae, "--json")
    assert r.exit_code == 0
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["file"] for x in records] == [str(p) for p in two_vae]
    assert [x["quality"] for x in records] == [10, 90]
    assert all(x["bytes"] == p.stat().st_size for x, p in zip(records, two_vae))


def test_info_continues_past_a_bad_file(run, two_vae, tmp_path):
    (tmp_path / "junk.vae").write_bytes(b"junk")
    r = run("info", tmp_path / "junk.vae", two_vae[0])
    assert r.exit_code == 1 and "junk.vae" in one_error_line(r)
    assert info_fields(r.stdout)["file"] == str(two_vae[0])  # no empty line for the skipped file
    r = run("info", two_vae[0], tmp_path / "junk.vae", two_vae[1], "--json")
    assert r.exit_code == 1 and "junk.vae" in one_error_line(r)
    assert [json.loads(line)["file"] for line in r.stdout.splitlines()] == [str(p) for p in two_vae]


def test_demo_without_argument_uses_the_sample_in_the_package(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository's assets/
    r = run("demo")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("coffee.png (sample shipped with vaecodec): 600x400 RGB8, model tiny@0")
    assert "PSNR" in r.stdout


def test_demo_with_a_path_uses_it(run, png):
    r = run("demo", png, "-q", 30)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{png}: 56x40 RGB8") and "q=30" in r.stdout


def test_sample_is_package_data():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["vaecodec"]
    pkg = Path(cli.__file__).parent
    sample = (pkg / "samples" / cli.SAMPLE).relative_to(pkg).as_posix()
    assert any(fnmatch(sample, p) for p in patterns), (sample, patterns)
    assert Image.open(io.BytesIO(cli.sample_image())).size == (600, 400)


def test_encode_killed_halfway_leaves_nothing(tmp_path):
    """A real process killed mid-encode (SIGKILL): no output, no partial file, the input untouched."""
    import signal

    src = tmp_path / "in.png"
    Image.fromarray(natural_like(200, 300)).save(src)
    before = src.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    # the child announces when the network work is done and then lingers, so the kill
    # provably lands after the encode started and before anything was written
    code = (
        "import sys, time\n"
        "import vaecodec.codec as c\n"
        "orig = c.Codec._encode_planes\n"
        "def slow(*a, **k):\n"
        "    r = orig(*a, **k)\n"
        "    sys.stderr.write('ENCODED\\n'); sys.stderr.flush(); time.sleep(120)\n"
        "    return r\n"
        "c.Codec._encode_planes = slow\n"
        "from vaecodec.cli import main\n"
        f"main(['encode', {str(src)!r}, '-o', {str(out / 'x.vae')!r}])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.strip() == "ENCODED":
            break
    assert proc.poll() is None, "the encode ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.iterdir()) == []
    assert src.read_bytes() == before


def test_refine_option(run, png, tmp_path, tiny_codec):
    r = run("encode", png, "-o", tmp_path / "r.vae", "--refine", 3, "-q", 40)
    assert r.exit_code == 0
    rgb = np.asarray(Image.open(png).convert("RGB"))
    assert (tmp_path / "r.vae").read_bytes() == tiny_codec.encode(rgb, quality=40, refine=3)
    r = run("encode", png, "-o", tmp_path / "bad.vae", "--refine", -1)
    assert r.exit_code == 2 and "--refine" in r.stderr
    assert not (tmp_path / "bad.vae").exists()


@pytest.fixture
def no_model(monkeypatch):
    """A CLI whose model must not load: the checks have to refuse the plan first."""

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(cli, "_codec", refuse)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def test_two_inputs_for_one_output_are_refused_before_any_work(no_model, tmp_path):
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        Image.fromarray(natural_like(20, 20)).save(tmp_path / d / "x.png")
    out = tmp_path / "out"
    r = no_model("encode", tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png", "-o", out)
    assert r.exit_code == 1
    line = one_error_line(r)
    assert "d1" in line and "d2" in line and "x.vae" in line
    assert not any(out.iterdir())


def test_existing_output_is_refused_before_the_model_loads(no_model, png):
    png.with_suffix(".vae").write_bytes(b"keep me")
    r = no_model("encode", png)
    assert r.exit_code == 1 and "already exists" in one_error_line(r)
    assert png.with_suffix(".vae").read_bytes() == b"keep me"


def test_file_like_output_with_several_inputs_is_a_usage_error(no_model, png, tmp_path):
    other = tmp_path / "other.png"
    Image.fromarray(natural_like(20, 20)).save(other)
    r = no_model("encode", png, other, "-o", tmp_path / "single.vae")
    assert r.exit_code == 2 and "looks like a file name" in r.stderr
    assert not (tmp_path / "single.vae").exists()


def test_binary_output_to_a_terminal_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    with pytest.raises(SystemExit) as e:
        cli.check_outputs([("photo.png", "-")], force=False, inputs=("photo.png",))
    assert e.value.code == 1 and "terminal" in capsys.readouterr().err


def test_no_progress_bar_when_stderr_is_not_a_terminal(run, tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(natural_like(20, 24, seed=i)).save(files[-1])
    r = run("encode", *files, "-o", tmp_path / "out")
    assert r.exit_code == 0 and "\r" not in r.stderr and r.stderr == ""
    assert len(list((tmp_path / "out").iterdir())) == 3


# ---------------------------------------------------------------------------- metadata and decoded outputs


def _camera_jpeg(path: Path, icc: bytes | None = None) -> Path:
    from test_metadata import camera_exif

    kw = {"icc_profile": icc} if icc else {}
    Image.fromarray(natural_like(24, 32)).save(path, exif=camera_exif(), quality=95, **kw)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_exif_and_profile_survive_encode_and_decode(run, tmp_path, suffix):
    from test_metadata import DISPLAY_P3, assert_camera_exif

    src = _camera_jpeg(tmp_path / "cam.jpg", icc=DISPLAY_P3)
    assert run("encode", src, "-o", tmp_path / "cam.vae").exit_code == 0
    r = run("decode", tmp_path / "cam.vae", "-o", tmp_path / f"out{suffix}")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / f"out{suffix}") as im:
        assert_camera_exif(im.getexif())
        assert im.info["icc_profile"] == DISPLAY_P3


def test_strip_drops_exif_and_profile(run, tmp_path):
    from test_metadata import DISPLAY_P3

    src = _camera_jpeg(tmp_path / "cam.jpg", icc=DISPLAY_P3)
    run("encode", src, "-o", tmp_path / "kept.vae")
    assert run("encode", src, "--strip", "-o", tmp_path / "bare.vae").exit_code == 0
    assert (tmp_path / "bare.vae").stat().st_size < (tmp_path / "kept.vae").stat().st_size
    run("decode", tmp_path / "bare.vae", "-o", tmp_path / "bare.png")
    with Image.open(tmp_path / "bare.png") as im:
        assert "icc_profile" not in im.info and not im.getexif()


def test_target_bpp_below_the_metadata_names_it(run, tmp_path):
    from test_metadata import DISPLAY_P3

    src = _camera_jpeg(tmp_path / "cam.jpg", icc=DISPLAY_P3)
    r = run("encode", src, "--target-bpp", "0.5")
    assert r.exit_code == 1
    line = one_error_line(r)
    assert str(src) in line and "metadata alone" in line and "ICC profile" in line and "--strip" in line


@pytest.fixture
def vae_and_pixels(run, png, tmp_path, tiny_codec):
    run("encode", png, "-o", tmp_path / "a.vae")
    data = (tmp_path / "a.vae").read_bytes()
    return tmp_path / "a.vae", tiny_codec.decode(data)


def test_webp_is_lossless_by_default(run, vae_and_pixels, tmp_path):
    vae, pixels = vae_and_pixels
    assert run("decode", vae, "-o", tmp_path / "a.webp").exit_code == 0
    with Image.open(tmp_path / "a.webp") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels)


def test_webp_keeps_alpha_and_the_colour_under_it(run, tmp_path, tiny_codec):
    rgba = np.dstack([natural_like(20, 20), np.tile(np.arange(20, dtype=np.uint8) * 13, (20, 1))])
    rgba[:, :3, 3] = 0  # fully transparent columns
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    run("encode", tmp_path / "t.png")
    pixels = tiny_codec.decode((tmp_path / "t.vae").read_bytes())
    assert run("decode", tmp_path / "t.vae", "-o", tmp_path / "t.webp").exit_code == 0
    with Image.open(tmp_path / "t.webp") as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), pixels)


def test_output_quality_sets_jpeg_and_makes_webp_lossy(run, vae_and_pixels, tmp_path):
    vae, pixels = vae_and_pixels
    sizes = {}
    for q in (20, 95):
        assert run("decode", vae, "-o", tmp_path / f"q{q}.jpg", "--output-quality", q).exit_code == 0
        sizes[q] = (tmp_path / f"q{q}.jpg").stat().st_size
    assert sizes[20] < sizes[95], sizes
    run("decode", vae, "-o", tmp_path / "default.jpg")
    assert (tmp_path / "default.jpg").read_bytes() == (tmp_path / f"q{cli.DEFAULT_OUTPUT_QUALITY}.jpg").read_bytes()
    run("decode", vae, "-o", tmp_path / "lossy.webp", "--output-quality", 30)
    with Image.open(tmp_path / "lossy.webp") as im:
        assert not np.array_equal(np.asarray(im.convert("RGB")), pixels)


def test_avif_output_at_a_quality(run, vae_and_pixels, tmp_path):
    vae, pixels = vae_and_pixels
    assert run("decode", vae, "-o", tmp_path / "a.avif", "--output-quality", 90).exit_code == 0
    with Image.open(tmp_path / "a.avif") as im:
        assert im.format == "AVIF" and im.size == (pixels.shape[1], pixels.shape[0])


def test_output_quality_for_a_lossless_format_is_refused_before_the_model_loads(no_model, png, tmp_path):
    r = no_model("decode", png.with_suffix(".vae"), "-o", tmp_path / "x.png", "--output-quality", 80)
    assert r.exit_code == 1
    line = one_error_line(r)
    assert str(tmp_path / "x.png") in line and "--output-quality" in line and "losslessly" in line


def test_jpeg_xl_is_written_losslessly_or_refused_clearly(run, vae_and_pixels, tmp_path):
    vae, pixels = vae_and_pixels
    r = run("decode", vae, "-o", tmp_path / "a.jxl")
    if cli._jxl_writer() is None:
        assert r.exit_code == 1 and "JPEG XL" in one_error_line(r)
        return
    assert r.exit_code == 0, r.stderr
    data = (tmp_path / "a.jxl").read_bytes()
    assert data[:2] == b"\xff\x0a" or data[:12] == b"\0\0\0\x0cJXL \r\n\x87\n"
    if cli._jxl_writer() == "imagecodecs":
        import imagecodecs

        assert np.array_equal(imagecodecs.jpegxl_decode(data), pixels)


def test_jpeg_xl_without_a_writer_is_a_one_line_error(no_model, png, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_jxl_writer", lambda: None)
    r = no_model("decode", png.with_suffix(".vae"), "-o", tmp_path / "x.jxl")
    assert r.exit_code == 1
    line = one_error_line(r)
    assert str(tmp_path / "x.jxl") in line and "cannot write JPEG XL" in line


def test_verbose_encode_shows_what_the_metadata_costs(run, tmp_path):
    import zlib

    from test_metadata import lcms_srgb
    from vaecodec import container

    src = _camera_jpeg(tmp_path / "cam.jpg", icc=lcms_srgb())
    r = run("encode", src, "-v")
    vf = container.unpack((tmp_path / "cam.vae").read_bytes())
    cost = len(zlib.compress(vf.exif, 9)) + 4
    assert f"metadata {cost} bytes (EXIF, sRGB flag)" in r.stderr
    r = run("encode", src, "-v", "--strip", "-f")
    assert "metadata" not in r.stderr
