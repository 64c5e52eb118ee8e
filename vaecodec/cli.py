"""The ``vaecodec`` command line: a thin layer over the Python API.

Exit codes: 0 success; 1 a :class:`VaecodecError` (one line on stderr naming the file and
the problem); 2 a usage error (click). stdout carries only payload (``-o -``) or the
answer of ``info``; messages go to stderr. Heavy imports (torch) happen inside the
commands that need them, so ``--help`` and ``info`` stay instant.

``info`` prints one block of ``key: value`` lines per file, headed by the file name; with
``--json`` it prints JSON Lines: one JSON object per file, one per line, in argument order.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from . import __version__, container
from .errors import VaecodecError

STDIO = "-"
ENCODED_SUFFIX = ".vae"
DEFAULT_DECODED_SUFFIX = ".png"

#: Quality of JPEG and AVIF outputs when --output-quality is not given.
DEFAULT_OUTPUT_QUALITY = 95
#: Formats with a quality setting; WebP and JPEG XL are written losslessly unless one is given.
LOSSY_FORMATS = ("JPEG", "WEBP", "AVIF", "JXL")
#: Formats whose Pillow writer stores an ICC profile and EXIF.
METADATA_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "AVIF", "JXL")
JXL_SUFFIXES = (".jxl",)


def err(msg: str) -> None:
    click.echo(msg, err=True)


# ---------------------------------------------------------------------------- files


def read_input(path: str) -> bytes:
    """Bytes of a file, or of stdin for ``-``; missing files and folders are VaecodecErrors."""
    if path == STDIO:
        return sys.stdin.buffer.read()
    return container.read_source(path)  # ReadError (a VaecodecError) names the file


@contextmanager
def atomic_output(path: Path) -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_output(path: str, write: Callable[[Any], None], *, force: bool, inputs: list[str]) -> None:
    """Write via ``write(fileobj)`` to ``path`` (or stdout), atomically, never over an input."""
    if path == STDIO:
        buf = sys.stdout.buffer
        write(buf)
        buf.flush()
        return
    p = Path(path)
    if any(i != STDIO and Path(i).resolve() == p.resolve() for i in inputs):
        msg = f"{path}: refusing to overwrite an input file"
        raise VaecodecError(msg)
    if p.is_dir():
        msg = f"{path}: is a folder"
        raise VaecodecError(msg)
    if p.exists() and not force:
        msg = f"{path}: already exists (use --force to overwrite)"
        raise VaecodecError(msg)
    if not p.parent.is_dir():
        msg = f"{path}: folder {p.parent} does not exist"
        raise VaecodecError(msg)
    with atomic_output(p) as f:
        write(f)


def plan_outputs(inputs: tuple[str, ...], output: str | None, suffix: str) -> list[tuple[str, str]]:
    """Pair each input with its output path. ``-o`` is a file for one input, a folder for many."""
    if not inputs:
        msg = "no input files given"
        raise click.UsageError(msg)
    if len(inputs) > 1 and STDIO in inputs:
        msg = "'-' (stdin) can only be the single input"
        raise click.UsageError(msg)
    if len(inputs) == 1 and output is not None and not Path(output).is_dir():
        return [(inputs[0], output)]
    if len(inputs) > 1 and output == STDIO:
        msg = "-o - (stdout) takes a single input"
        raise click.UsageError(msg)
    if len(inputs) > 1 and output is not None and not Path(output).is_dir() and Path(output).suffix:
        msg = f"-o {output}: with {len(inputs)} inputs -o is a folder, and {output!r} looks like a file name"
        raise click.UsageError(msg)
    if output is not None:
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in inputs:
        if i == STDIO:
            pairs.append((i, STDIO))
            continue
        name = Path(i).with_suffix(suffix).name
        pairs.append((i, str(folder / name) if output is not None else str(Path(i).with_suffix(suffix))))
    return pairs


def check_outputs(pairs: list[tuple[str, str]], *, force: bool, inputs: tuple[str, ...]) -> None:
    """Refuse a plan before any work (and before a model loads): two inputs writing one output, an
    existing output without ``--force``, an input as output, binary data for a terminal. Every problem
    is printed (one line each); then exit 1."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for src, dst in pairs:
        if dst == STDIO:
            if sys.stdout.isatty():
                problems.append(f"{src}: refusing to write binary data to a terminal (use -o FILE or redirect)")
            continue
        key = str(Path(dst).resolve())
        if key in seen:
            problems.append(f"{dst}: both {seen[key]} and {src} would be written here")
            continue
        seen[key] = src
        p = Path(dst)
        if any(i != STDIO and Path(i).resolve() == p.resolve() for i in inputs):
            problems.append(f"{dst}: refusing to overwrite an input file")
        elif p.is_dir():
            problems.append(f"{dst}: is a folder")
        elif p.exists() and not force:
            problems.append(f"{dst}: already exists (use --force to overwrite)")
    if problems:
        for m in problems:
            err(f"error: {m}")
        sys.exit(1)


@contextmanager
def file_progress(name: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress callback for one long file (``Codec.encode``/``decode``'s ``progress``): a bar on a
    terminal that shows only once the file has taken a second (a quality search, refinement, a huge
    image's tiles); None when stderr is not a terminal (logs get no carriage-return lines)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar: Any = None
    current: tuple[str, int] | None = None

    def update(stage: str, done: int, total: int) -> None:
        nonlocal bar, current
        if bar is None:
            bar = tqdm(total=total, desc=f"{name}: {stage}", file=sys.stderr, leave=False, delay=1.0,
                       dynamic_ncols=True)
            current = (stage, total)
        elif current != (stage, total):
            bar.total, bar.n, bar.last_print_n = total, 0, 0  # as reset(), without drawing before the delay
            bar.set_description(f"{name}: {stage}", refresh=False)
            current = (stage, total)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def run_each(pairs: list[tuple[str, str]], action: Callable[[str, str], None], what: str) -> None:
    """Run ``action`` per file (a progress bar for many files on a terminal); errors are one line each, exit 1."""
    failed = 0
    show_bar = len(pairs) > 1 and sys.stderr.isatty()  # no carriage-return lines in logs
    if show_bar:
        from tqdm import tqdm

        it: Any = tqdm(pairs, desc=what, unit="file", file=sys.stderr, leave=False)
    else:
        it = pairs
    for src, dst in it:
        try:
            action(src, dst)
        except VaecodecError as e:
            failed += 1
            msg = str(e) if src in str(e) or dst in str(e) else f"{src}: {e}"
            (it.write if show_bar else err)(f"error: {msg}")  # type: ignore[operator]
    if failed:
        sys.exit(1)


# ---------------------------------------------------------------------------- commands


def _print_version(ctx: click.Context, _param: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    import torch

    # compressai's version from its metadata: importing it takes seconds and warns (its torch.jit.script)
    try:
        compressai_version = version("compressai")
    except PackageNotFoundError:
        compressai_version = "not installed"
    cuda = f"available ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "not available"
    click.echo(f"vaecodec {__version__}\ntorch {torch.__version__}\ncompressai {compressai_version}\n"
               f"CUDA {cuda}")
    ctx.exit()


class _Group(click.Group):
    """Turns any VaecodecError escaping a command into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VaecodecError as e:
            err(f"error: {e}")
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show versions (vaecodec, torch, compressai) and whether CUDA is available.")
def main() -> None:
    """vaecodec: a learned image codec (.vae files).

    \b
      vaecodec encode photo.png -o photo.vae -q 75
      vaecodec decode photo.vae -o photo.png
      vaecodec info photo.vae
    """
    from .allocator import keep_buffers

    keep_buffers()  # large tensors stay in the heap: measured 1.3x faster encode, 1.6x faster training here


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output file (one input) or folder (many inputs); '-' for stdout. "
              "Default: the input with a .vae suffix.")
@click.option("-q", "--quality", type=click.FloatRange(0, 100), default=None,
              help="0 (smallest) to 100 (best); default 75.")
@click.option("--target-bpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Search the quality that gives this many bits per pixel (within 5 %).")
@click.option("--refine", type=click.IntRange(0, 1000), default=0, show_default=True, metavar="STEPS",
              help="Optimize the latents for this image with STEPS gradient steps before coding: "
                   "a slower encoder and a smaller file for the same quality. The files decode as usual.")
@click.option("--model", "model_id", default=None, help="Model id (default: the shipped model).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="A .safetensors file from `vaecodec train`/`export` (e.g. a fine-tuned model).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--strip", is_flag=True,
              help="Drop the ICC profile and EXIF block (kept by default: EXIF compressed, the standard sRGB "
                   "profile as a flag, other profiles compressed).")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-v", "--verbose", is_flag=True, help="Print size, bpp and time per file (stderr).")
def encode(inputs: tuple[str, ...], output: str | None, quality: float | None, target_bpp: float | None,
           refine: int, model_id: str | None, weights: str | None, device: str, strip: bool, force: bool,
           verbose: bool) -> None:
    """Encode images (PNG, JPEG, WebP, TIFF, BMP, PPM, ...) to .vae files.

    The ICC profile and EXIF metadata are kept unless --strip is given; --target-bpp counts the
    whole file, metadata included.
    """
    if quality is not None and target_bpp is not None:
        msg = "give either --quality or --target-bpp, not both"
        raise click.UsageError(msg)
    pairs = plan_outputs(inputs, output, ENCODED_SUFFIX)
    check_outputs(pairs, force=force, inputs=inputs)
    codec = _codec(model_id, weights, device)
    from .codec import DEFAULT_QUALITY
    from .image import open_image

    def one(src: str, dst: str) -> None:
        t0 = time.perf_counter()
        planes = open_image(src, read_input(src) if src == STDIO else None)
        q = DEFAULT_QUALITY if quality is None else quality
        with file_progress(src) as progress:
            data = codec.encode(planes, quality=q, target_bpp=target_bpp, refine=refine, metadata=not strip,
                                progress=progress)
        write_output(dst, lambda f: f.write(data), force=force, inputs=list(inputs))
        if verbose:
            vf = container.unpack(data)
            h = vf.header
            bpp = 8 * len(data) / (h.width * h.height)
            err(f"{src} -> {dst}: {len(data)} bytes, {bpp:.4f} bpp, quality {h.quality:g}{_metadata_note(vf)}, "
                f"{time.perf_counter() - t0:.2f} s")

    run_each(pairs, one, "encoding")


def _metadata_note(vf: container.VaeFile) -> str:
    """", metadata N bytes (EXIF, ICC profile)" for ``-v``: what the kept metadata costs ("" without any)."""
    kinds = [k for k, present in (("EXIF", vf.exif is not None), ("sRGB flag", vf.header.srgb),
                                  ("ICC profile", vf.icc is not None)) if present]
    if not kinds:
        return ""
    return f", metadata {container.metadata_bytes(vf.icc, vf.exif)} bytes ({', '.join(kinds)})"


def _codec(model_id: str | None, weights: str | None, device: str, deterministic: bool = False) -> Any:
    from .codec import Codec

    return Codec(model_id, device=device, weights=weights, deterministic=deterministic)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output file (one input) or folder (many); '-' for stdout (PNG). "
              "The format follows the extension (.png, .webp, .tif, .bmp, .ppm, .jpg, .avif, .jxl, ...); "
              "default .png. PNG, TIFF, BMP, PPM and (by default) WebP and JPEG XL are lossless.")
@click.option("--output-quality", type=click.IntRange(0, 100), default=None, metavar="0..100",
              help=f"Quality of a lossy output: JPEG and AVIF (default {DEFAULT_OUTPUT_QUALITY}); "
                   "with .webp or .jxl it makes them lossy (else lossless).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="The .safetensors file the images were encoded with, if not the shipped model.")
@click.option("--deterministic", is_flag=True,
              help="Float64 synthesis: pixels independent of threads and tiling (slower).")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-v", "--verbose", is_flag=True, help="Print size and time per file (stderr).")
def decode(inputs: tuple[str, ...], output: str | None, output_quality: int | None, device: str,
           weights: str | None, deterministic: bool, force: bool, verbose: bool) -> None:
    """Decode .vae files to images (with their ICC profile and EXIF, where the format holds them)."""
    pairs = plan_outputs(inputs, output, DEFAULT_DECODED_SUFFIX)
    check_outputs(pairs, force=force, inputs=inputs)
    for _, dst in pairs:  # before any model loads
        _output_format(dst, output_quality)
    codecs: dict[str, Any] = {}

    def one(src: str, dst: str) -> None:
        t0 = time.perf_counter()
        data = read_input(src)
        header = container.read_header(data)
        if header.model_id not in codecs:
            codecs[header.model_id] = _codec(None if weights else header.model_id, weights, device, deterministic)
        with file_progress(src) as progress:
            im = codecs[header.model_id].decode(data, output="pil", progress=progress)
        fmt = _output_format(dst, output_quality)
        if im.mode in ("RGBA", "LA") and fmt in ("JPEG", "PPM"):
            msg = f"{dst}: {fmt} cannot store the alpha plane; decode to .png, .webp or .tif"
            raise VaecodecError(msg)
        encoded = _encode_output(im, fmt, output_quality, dst)
        write_output(dst, lambda f: f.write(encoded), force=force, inputs=list(inputs))
        if verbose:
            err(f"{src} -> {dst}: {header.width}x{header.height} {im.mode}, {time.perf_counter() - t0:.2f} s")

    run_each(pairs, one, "decoding")


def _format_for(path: str) -> str:
    if path == STDIO:
        return "PNG"
    from PIL import Image

    ext = Path(path).suffix.lower()
    Image.init()
    fmt = Image.EXTENSION.get(ext)
    if fmt is None and ext in JXL_SUFFIXES:
        return "JXL"
    if fmt is None:
        msg = f"{path}: unknown image extension {ext!r} (use .png, .webp, .tif, .bmp, .ppm, .jpg, .avif, .jxl)"
        raise VaecodecError(msg)
    return fmt


def _output_format(path: str, quality: int | None) -> str:
    """The format for ``path``, checked against ``quality`` and what is installed (before decoding)."""
    fmt = _format_for(path)
    if quality is not None and fmt not in LOSSY_FORMATS:
        msg = (f"{path}: --output-quality applies to lossy outputs (.jpg, .webp, .avif, .jxl); "
               f"{fmt} is written losslessly")
        raise VaecodecError(msg)
    if fmt == "JXL" and _jxl_writer() is None:
        msg = (f"{path}: cannot write JPEG XL here: the installed Pillow has no JPEG XL writer and imagecodecs "
               f"with libjxl is not installed (pip install imagecodecs); decode to .png or .webp instead")
        raise VaecodecError(msg)
    return fmt


def _jxl_writer() -> str | None:
    """"pillow" if Pillow (or a plugin) writes JPEG XL, "imagecodecs" if imagecodecs has libjxl, else None."""
    from PIL import Image

    Image.init()
    if "JXL" in Image.SAVE:
        return "pillow"
    try:
        import imagecodecs
    except ImportError:
        return None
    return "imagecodecs" if getattr(imagecodecs, "JPEGXL", None) and imagecodecs.JPEGXL.available else None


def _encode_output(im: Any, fmt: str, quality: int | None, dst: str) -> bytes:
    """The bytes of decoded image ``im`` in ``fmt``: lossless where the format allows it (PNG, TIFF, BMP,
    PPM; WebP and JPEG XL unless ``quality`` is given), else at ``quality`` (default
    :data:`DEFAULT_OUTPUT_QUALITY`). The ICC profile and EXIF go along where the format stores them."""
    import io

    params: dict[str, Any] = {}
    if fmt in METADATA_FORMATS:
        for key in ("icc_profile", "exif"):
            if im.info.get(key):
                params[key] = im.info[key]
    if fmt in ("JPEG", "AVIF"):
        params["quality"] = DEFAULT_OUTPUT_QUALITY if quality is None else quality
    elif fmt == "WEBP":
        # lossless keeps every pixel; exact keeps the colour under fully transparent pixels too
        params.update({"lossless": True, "exact": True} if quality is None else {"quality": quality})
    if fmt == "JXL" and _jxl_writer() == "imagecodecs":
        import imagecodecs
        import numpy as np

        if params.get("icc_profile") or params.get("exif"):
            err(f"note: {dst}: imagecodecs' JPEG XL writer stores no ICC profile or EXIF; they are left out")
        kw: dict[str, Any] = {"lossless": True} if quality is None else {"level": quality}
        return bytes(imagecodecs.jpegxl_encode(np.asarray(im), **kw))
    if fmt == "JXL":
        params.update({"lossless": True} if quality is None else {"quality": quality})
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON Lines: one JSON object per file (with its name under \"file\"), one per line.")
def info(files: tuple[str, ...], as_json: bool) -> None:
    """Show the header and layout of .vae files (no model is loaded).

    One block of "key: value" lines per file, headed by the file name, blocks separated by an
    empty line. A file that cannot be read or is not a valid .vae file gives one error line and
    exit code 1; the others are still shown.
    """
    failed = shown = 0
    for file in files:
        try:
            rec = _info_record(file)
        except VaecodecError as e:
            failed += 1
            err(f"error: {e}")
            continue
        if as_json:
            click.echo(json.dumps(rec))
            continue
        if shown:
            click.echo()
        shown += 1
        click.echo(file)
        for line in _info_lines(rec):
            click.echo(f"  {line}")
    if failed:
        sys.exit(1)


def _info_record(file: str) -> dict[str, Any]:
    data = read_input(file)
    try:
        vf = container.unpack(data)
    except VaecodecError as e:
        msg = f"{file}: {e}"
        raise type(e)(msg) from None
    h = vf.header
    return {
        "file": file, "format_version": h.format_version, "model_id": h.model_id,
        "weights_tag": h.weights_tag.hex(), "width": h.width, "height": h.height,
        "pixel_format": h.pixel_format.name, "quality": h.quality, "bytes": len(data),
        "bpp": round(8 * len(data) / (h.width * h.height), 6), "index_crc": f"{h.index_crc:08x}",
        "streams": {"z": len(vf.z), "y": [len(s) for s in vf.y],
                    **({"alpha": len(vf.alpha)} if vf.alpha is not None else {}),
                    **({"icc": len(container.stored_icc(vf.icc)[0])} if vf.icc is not None else {}),
                    **({"exif": len(container.stored_exif(vf.exif))} if vf.exif is not None else {})},
        # the metadata as decoded (stream sizes above are as stored, compressed)
        "icc_profile": "sRGB" if h.srgb else (len(vf.icc) if vf.icc is not None else None),
        "exif_bytes": len(vf.exif) if vf.exif is not None else None,
        "header_overhead": container.overhead(len(vf.streams), len(h.model_id)),
    }


def _info_lines(rec: dict[str, Any]) -> list[str]:
    """The human-readable form of an ``info`` record."""
    s = rec["streams"]
    n_y = len(s["y"])
    streams = [f"z {s['z']}", f"y {sum(s['y'])} ({n_y} chunk{'' if n_y == 1 else 's'})"]
    streams += [f"{k} {s[k]}" for k in ("alpha", "icc", "exif") if k in s]
    icc = rec["icc_profile"]
    icc_text = "none" if icc is None else "standard sRGB (a flag, no stream)" if icc == "sRGB" else f"{icc} bytes"
    exif = "none" if rec["exif_bytes"] is None else f"{rec['exif_bytes']} bytes"
    return [
        f"model: {rec['model_id']} (weights tag {rec['weights_tag']})",
        f"size: {rec['width']}x{rec['height']}",
        f"pixel format: {rec['pixel_format']}",
        f"quality: {rec['quality']:g}",
        f"file size: {rec['bytes']} bytes, {rec['bpp']:.4f} bpp",
        f"streams: {', '.join(streams)} bytes",
        f"ICC profile: {icc_text}",
        f"EXIF: {exif}",
        f"header overhead: {rec['header_overhead']} bytes",
        f"format version: {rec['format_version']}",
        f"index CRC: {rec['index_crc']}",
    ]


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json: bool) -> None:
    """List the shipped models."""
    from .weights import available_models, default_model_id

    specs = available_models()
    if as_json:
        click.echo(json.dumps([{"model_id": s.model_id, "N": s.N, "M": s.M, "levels": s.levels,
                                "sha256": s.sha256} for s in specs], indent=2))
        return
    default = default_model_id() if specs else None
    for s in specs:
        mark = " (default)" if s.model_id == default else ""
        click.echo(f"{s.model_id}{mark}  N={s.N} M={s.M} levels={s.levels} sha256={s.sha256[:16]}…")


def _float_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        msg = f"{value!r}: expected comma-separated numbers"
        raise click.BadParameter(msg) from None


@main.command()
@click.argument("data")
@click.option("--out", required=True, help="Run folder: checkpoints (last.pt, best.pt) and log.jsonl.")
@click.option("--steps", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--patch-size", type=click.IntRange(64), default=128, show_default=True,
              help="Crop size (a multiple of 64 keeps the hyperprior's grid whole).")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak learning rate (Adam).")
@click.option("--lr-decay-start", type=click.IntRange(0), default=0, show_default=True,
              help="Cosine decay to --lr-min from this step to --steps (0: constant).")
@click.option("--lr-min", type=float, default=1e-5, show_default=True)
@click.option("--metric", type=click.Choice(["mse", "ms-ssim"]), default="mse", show_default=True)
@click.option("--level-weights", default=None, callback=_float_list,
              help="Sampling weights of the rate levels, lowest first, comma-separated (default: uniform).")
@click.option("--level-balance", type=float, default=0.0, show_default=True,
              help="Weight each crop's loss by (λ/λ_mid)^-P: 0 lets the top rates dominate the gradient, "
                   "0.5 gives every rate level about the same pull.")
@click.option("--channels", type=(click.IntRange(1), click.IntRange(1)), default=None,
              help="N and M: channels of the transforms/z and of y (default: those of the run being resumed or "
                   "of --init, else 128 192; values above --init's widen the model, keeping its function).")
@click.option("--open-channels", type=click.IntRange(0), default=0, show_default=True,
              help="With --channels wider than --init's y: the new channels' rate is left out of the loss for "
                   "the first half of this many steps, then ramps in, so the synthesis learns to read them "
                   "before the rate prunes them.")
@click.option("--split-units", is_flag=True,
              help="With --channels wider than --init's transforms: the new hidden units of the analysis and "
                   "synthesis start as copies of the most-read old units, sharing their readers' weights "
                   "(Net2Net), instead of new units read by zeros.")
@click.option("--split-noise", type=click.FloatRange(0), default=None,
              help="With --split-units: noise on the copies' incoming weights, as a share of the layer's weight "
                   "spread (their sources get the opposite), so that twins can grow apart (default 0.3).")
@click.option("--levels", type=click.IntRange(2), default=None,
              help="Rungs of the λ ladder (default: those of the run being resumed or of --init, else 9). More than "
                   "--init's add rungs above λ=0.18 (each about 1.93× the last), their gains extrapolated.")
@click.option("--init", default=None, help="Start from 'shipped', a .safetensors file or a run's .pt checkpoint (its weight "
              "average when it kept one) (fine-tuning). A "
              "checkerboard model (such as mshc@1) trains its transforms, hyperprior and context together.")
@click.option("--start-step", type=click.IntRange(0), default=0, show_default=True,
              help="With --init: the step count to continue from (a run moved to a new machine).")
@click.option("--start-seconds", type=float, default=0.0, show_default=True,
              help="With --init: training seconds already spent, for the log.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT/last.pt if present.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=0.03, show_default=True,
              help="Share of DATA held out for validation.")
@click.option("--val-every", type=float, default=900, show_default=True, help="Seconds between validations.")
@click.option("--checkpoint-every", type=float, default=300, show_default=True, help="Seconds between checkpoints.")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this long.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--context", is_flag=True,
              help="Train the checkerboard context of --init (default: the shipped model) on its cached latents, "
                   "transforms frozen: the second model generation. Crops of --patch-size pixels are taken from the latents.")
@click.option("--synthesis", is_flag=True,
              help="Grow the synthesis of --init (a checkerboard model; default: the shipped one) with residual "
                   "blocks and train it alone on the latents the codec decodes: same files, better pictures.")
def train(data: str, out: str, **kw: Any) -> None:
    """Train (or fine-tune) a model on a folder of images.

    \b
    Resumable: rerun the same command to continue from OUT/last.pt.
    Several processes: torchrun --nproc-per-node 2 -m vaecodec train DATA --out OUT
    """
    if kw["context"] and kw["synthesis"]:
        raise click.UsageError("--context and --synthesis train different parts: choose one")
    if kw["context"] or kw["synthesis"]:
        import argparse

        if kw["context"]:
            from .training.context import train as run
        else:
            from .training.synthesis import train as run

        if kw["max_minutes"] is None:
            flag = "--context" if kw["context"] else "--synthesis"
            raise click.UsageError(f"{flag} needs --max-minutes (its learning rate follows the time budget)")
        args = argparse.Namespace(
            data=data, out=out, init=kw["init"] or "shipped", steps=kw["steps"], batch_size=kw["batch_size"],
            patch=max(1, kw["patch_size"] // 16), lr=kw["lr"], lr_min=kw["lr_min"], warmup=200, val_every=kw["val_every"], log_every=50,
            precision=kw["precision"], seed=kw["seed"], max_minutes=kw["max_minutes"],
            val_fraction=kw["val_fraction"],
        )
        err(f"validation: {json.dumps(run(args))}")
        return
    from .training.loop import TrainConfig, train as run

    n_ch, m_ch = kw["channels"] or (None, None)  # None: from the resumed run or --init
    cfg = TrainConfig(
        data=data, out=out, steps=kw["steps"], batch_size=kw["batch_size"], patch_size=kw["patch_size"],
        lr=kw["lr"], lr_decay_start=kw["lr_decay_start"], lr_min=kw["lr_min"], metric=kw["metric"],
        init=kw["init"], val_fraction=kw["val_fraction"], val_every_s=kw["val_every"],
        checkpoint_every_s=kw["checkpoint_every"], max_minutes=kw["max_minutes"], precision=kw["precision"],
        device=kw["device"], seed=kw["seed"], N=n_ch, M=m_ch,
        start_step=kw["start_step"], start_seconds=kw["start_seconds"], level_weights=kw["level_weights"],
        level_balance=kw["level_balance"], open_channels=kw["open_channels"], levels=kw["levels"],
        split_units=kw["split_units"],
        **({} if kw["split_noise"] is None else {"split_noise": kw["split_noise"]}),
    )
    result = run(cfg, resume=kw["resume"])
    if result:
        err(f"validation: {json.dumps(result)}")


@main.command()
@click.argument("checkpoint")
@click.option("-o", "--output", required=True, help="The .safetensors file to write.")
@click.option("--model-id", default="custom@1", show_default=True, help="Id recorded in the weights and in files.")
@click.option("--fp32", is_flag=True, help="Keep float32 parameters (default: float16).")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
def export(checkpoint: str, output: str, model_id: str, fp32: bool, force: bool) -> None:
    """Export a training checkpoint to a weights file usable with --weights."""
    from .training.export import export as run, model_from_checkpoint

    out = Path(output)
    if out.exists() and not force:
        msg = f"{output}: already exists (use --force to overwrite)"
        raise VaecodecError(msg)
    digest = run(model_from_checkpoint(checkpoint), out, model_id=model_id, half=not fp32)
    click.echo(f"{output}  sha256 {digest}")


SAMPLE = "coffee.png"


def sample_image() -> bytes:
    """The sample photo shipped inside the package (``vaecodec/samples``), for ``demo`` without an argument."""
    from importlib import resources

    return (resources.files(__package__) / "samples" / SAMPLE).read_bytes()


@main.command()
@click.argument("image", required=False)
@click.option("-q", "--quality", type=click.FloatRange(0, 100), default=75, show_default=True)
def demo(image: str | None, quality: float) -> None:
    """Encode and decode IMAGE with the shipped model; print size, bpp and PSNR (and JPEG's at that size).

    Without IMAGE, a sample photo shipped with vaecodec is used.
    """
    import io

    import numpy as np
    from PIL import Image

    from .image import assemble, open_image

    if image is None:
        image = f"{SAMPLE} (sample shipped with vaecodec)"
        planes = open_image(image, sample_image())
    else:
        planes = open_image(image)
    original = assemble(planes.rgb, planes.pixel_format, planes.alpha)
    codec = _codec(None, None, "cpu")
    t0 = time.perf_counter()
    data = codec.encode(planes, quality=quality)
    t1 = time.perf_counter()
    decoded = codec.decode(data)
    t2 = time.perf_counter()
    pixels = planes.width * planes.height

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
        return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)

    click.echo(f"{image}: {planes.width}x{planes.height} {planes.pixel_format.name}, model {codec.model_id}")
    click.echo(f"vaecodec q={quality:g}: {len(data)} bytes, {8 * len(data) / pixels:.4f} bpp, "
               f"PSNR {psnr(original, decoded):.2f} dB (encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s)")
    # Pillow's JPEG (4:2:0, optimize) at the largest quality whose file is not larger
    best = None
    for q in range(1, 96):
        buf = io.BytesIO()
        Image.fromarray(planes.rgb).save(buf, format="JPEG", quality=q, subsampling="4:2:0", optimize=True)
        if buf.tell() > len(data):
            break
        best = (q, buf.getvalue())
    if best is None:
        click.echo("JPEG: even quality 1 is larger than the .vae file")
        return
    jpeg = np.asarray(Image.open(io.BytesIO(best[1])).convert("RGB"))
    click.echo(f"JPEG q={best[0]} (4:2:0, optimize): {len(best[1])} bytes, {8 * len(best[1]) / pixels:.4f} bpp, "
               f"PSNR {psnr(planes.rgb, jpeg):.2f} dB")


# ---------------------------------------------------------------------------- what else the VAE knows


def _model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="A .safetensors file from `vaecodec train`/`export`.")(f)
    return click.option("--model", "model_id", default=None, help="Model id (default: the shipped model).")(f)


def _save_figure(fig: Any, dst: str, force: bool, inputs: list[str]) -> None:
    fmt = _format_for(dst)
    write_output(dst, lambda f: fig.save(f, format=fmt), force=force, inputs=inputs)


def _folder_images(folder: str) -> list[str]:
    """The image files directly in ``folder`` (by the extensions Pillow knows), sorted by name."""
    from PIL import Image

    p = Path(folder)
    if not p.is_dir():
        msg = f"{folder}: not a folder"
        raise VaecodecError(msg)
    Image.init()
    files = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in Image.EXTENSION)
    if not files:
        msg = f"{folder}: no image files in this folder"
        raise VaecodecError(msg)
    return files


def _read_images(files: list[str], failed: list[str]) -> Iterator[tuple[str, Any]]:
    """(name, planes) of each readable file; unreadable ones print one error line and are counted."""
    from .image import open_image

    for f in files:
        try:
            yield f, open_image(f)
        except VaecodecError as e:
            failed.append(f)
            err(f"error: {e}")


@main.command()
@click.argument("image")
@click.option("-o", "--output", default=None, help="The figure (PNG, JPEG, ...); default: IMAGE with .bits.png.")
@click.option("-q", "--quality", type=click.FloatRange(0, 100), default=75, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the totals as one JSON object.")
@_model_options
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
def inspect(image: str, output: str | None, quality: float, as_json: bool, model_id: str | None,
            weights: str | None, device: str, force: bool) -> None:
    """Where the bits go: IMAGE, its bits per pixel (y and z, from the coder's own probabilities) and
    its reconstruction error side by side, with colour bars."""
    from .analysis import draw_bits_map
    from .image import open_image

    if output is None and image == STDIO:
        raise click.UsageError("with '-' as IMAGE, give -o")
    dst = output or str(Path(image).with_suffix(".bits.png"))
    check_outputs([(image, dst)], force=force, inputs=(image,))
    planes = open_image(image, read_input(image) if image == STDIO else None)
    bm = _codec(model_id, weights, device).bits_map(planes, quality=quality)
    _save_figure(draw_bits_map(bm, planes), dst, force, [image])
    rec = {"file": image, "map": dst, "quality": bm.quality, "bits": round(bm.bits, 1),
           "bpp": round(bm.mean_bpp, 5), "y_bits": round(float(bm.y_bits.sum()), 1),
           "z_bits": round(float(bm.z_bits.sum()), 1), "padding_bits": round(bm.padding_bits, 1),
           "psnr": round(bm.psnr, 3)}
    if as_json:
        click.echo(json.dumps(rec))
        return
    click.echo(f"{image}: {rec['bits'] / 8:.0f} bytes of y and z at quality {bm.quality:g} ({rec['bpp']:.4f} bpp; "
               f"z {100 * rec['z_bits'] / max(rec['bits'], 1e-9):.1f} %, padding "
               f"{100 * rec['padding_bits'] / max(rec['bits'], 1e-9):.1f} %), PSNR {rec['psnr']:.2f} dB -> {dst}")


@main.command()
@click.argument("folder")
@click.option("--top", type=click.IntRange(1), default=None, help="Show only the K most surprising images.")
@click.option("--sheet", default=None, help="Also write a contact sheet of the listed images (PNG, JPEG, ...).")
@click.option("-q", "--quality", type=click.FloatRange(0, 100), default=75, show_default=True,
              help="The quality the bits are counted at.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines: one object per image, in rank order.")
@_model_options
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing sheet.")
def rank(folder: str, top: int | None, sheet: str | None, quality: float, as_json: bool, model_id: str | None,
         weights: str | None, device: str, force: bool) -> None:
    """List the images in FOLDER from most to least surprising to the model.

    Each image is scored by its bits per pixel at one quality and its reconstruction error
    (both per pixel); the score is the mean of their robust z-scores within the folder.
    """
    from .analysis import draw_sheet, rank as run_rank
    from .image import open_image

    files = _folder_images(folder)
    if sheet:
        check_outputs([(folder, sheet)], force=force, inputs=())
    failed: list[str] = []
    ranked = run_rank(_read_images(files, failed), codec=_codec(model_id, weights, device), quality=quality)
    shown = ranked[:top] if top else ranked
    for i, r in enumerate(shown, 1):
        if as_json:
            click.echo(json.dumps({"rank": i, **r.as_dict()}))
        else:
            click.echo(f"{i:4d}  score {r.score:+6.2f}  {r.bpp:.4f} bpp  {r.psnr:6.2f} dB  {r.name}")
    if sheet and shown:
        fig = draw_sheet(shown, {r.name: open_image(r.name) for r in shown})
        _save_figure(fig, sheet, force, files)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("folder")
@click.option("-o", "--output", default=None, help="The map: thumbnails placed on the first two principal axes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines: each image's map position.")
@_model_options
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing map.")
def embed(folder: str, output: str | None, as_json: bool, model_id: str | None, weights: str | None,
          device: str, force: bool) -> None:
    """A map of the images in FOLDER: a latent descriptor per image, projected to 2-D by PCA."""
    from .analysis import draw_map, embed as run_embed
    from .image import open_image

    if output is None and not as_json:
        raise click.UsageError("give -o MAP.png, --json or both")
    files = _folder_images(folder)
    if output:
        check_outputs([(folder, output)], force=force, inputs=())
    failed: list[str] = []
    emb = run_embed(_read_images(files, failed), codec=_codec(model_id, weights, device))
    if as_json:
        for rec in emb.as_dicts():
            click.echo(json.dumps(rec))
    if output and emb.names:
        _save_figure(draw_map(emb, {n: open_image(n) for n in emb.names}), output, force, files)
    if failed:
        sys.exit(1)


@main.command()
@click.option("-n", "count", type=click.IntRange(1, 256), default=16, show_default=True, help="How many samples.")
@click.option("-o", "--output", required=True, help="The grid of samples (PNG, JPEG, ...).")
@click.option("-q", "--quality", type=click.FloatRange(0, 100), default=75, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed gives the same samples.")
@click.option("--size", type=(click.IntRange(1), click.IntRange(1)), default=(256, 256), show_default=True,
              metavar="H W", help="Height and width of each sample.")
@_model_options
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
def sample(count: int, output: str, quality: float, seed: int, size: tuple[int, int], model_id: str | None,
           weights: str | None, device: str, force: bool) -> None:
    """Draw images from the model's prior: z from the factorized prior, y from the Gaussians given z,
    through the synthesis. Expect textures and colour fields, not photographs."""
    from .analysis import draw_samples, sample as run_sample

    check_outputs([("sample", output)], force=force, inputs=())
    samples = run_sample(_codec(model_id, weights, device), count, quality=quality, seed=seed, size=size)
    _save_figure(draw_samples(samples), output, force, [])
