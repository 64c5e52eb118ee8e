"""The codec: image → network → entropy coding → container, and back.

:class:`Codec` keeps a loaded model on a device. The analysis and synthesis transforms run
on that device (batched); everything that decides the entropy coder's probabilities (the
hyper-synthesis, the table indexes and the rANS coder) runs on the CPU, one image at a
time, so encoder and decoder derive the same tables. A CRC of the table indexes travels
in the file, so a decoder that would disagree reports :class:`DesyncError` instead of
producing garbage.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import container, image
from .container import Header, VaeFile
from .errors import ModelMismatchError, VaecodecError
from .latent_coding import Y_CHUNK_SYMBOLS, band_rows, coder_for  # noqa: F401 (re-exported)
from .model import HyperpriorModel, arch_of, build_model
from .tiling import tiles
from .weights import ModelSpec, get_spec, load_state_dict, spec_from_file

DEFAULT_QUALITY = 75.0
QUALITY_RANGE = (0.0, 100.0)
TARGET_BPP_TOLERANCE = 0.05
#: Pixels per latent (y) element along each axis (of the shipped architectures; a loaded
#: codec uses its model's ``latent_stride``).
LATENT_STRIDE = 16
#: Analysis and synthesis run on tiles of this many latents (×16 pixels) per side, each with a
#: margin of the model's ``tile_margin`` latents of real context, so memory stays bounded for
#: huge images. The transforms' receptive fields (analysis: ±30 pixels; synthesis: 1 latent
#: before and 2 after, 3 and 4 with the residual synthesis) fit in the margin, so tiles differ
#: from a whole-image pass only by float rounding (see the tests).
TILE_LATENTS = 48
#: Most refinement steps an encode accepts (each costs about three synthesis passes).
MAX_REFINE = 1000  # the CLI's --refine range repeats it (the CLI does not import torch)


def quality_to_level(quality: float, levels: int) -> float:
    """The level of ``quality`` on a ladder of ``levels`` (:meth:`HyperpriorModel.quality_to_level`)."""
    return float(quality) / 100.0 * (levels - 1)


def _check_refine(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 0 <= steps <= MAX_REFINE:
        msg = f"refine must be a whole number of steps from 0 to {MAX_REFINE}, got {steps!r}"
        raise ValueError(msg)
    return int(steps)


def _check_quality(quality: float) -> float:
    q = float(quality)
    if not (QUALITY_RANGE[0] <= q <= QUALITY_RANGE[1]) or math.isnan(q):
        msg = f"quality must be between {QUALITY_RANGE[0]:g} and {QUALITY_RANGE[1]:g}, got {quality}"
        raise ValueError(msg)
    return round(q * container.QUALITY_SCALE) / container.QUALITY_SCALE  # what the header can hold


def _profile(vf: VaeFile) -> bytes | None:
    """The ICC profile a decoded image carries: the stored one, or vaecodec's sRGB profile for the flag."""
    return image.SRGB_PROFILE if vf.header.srgb else vf.icc


def _with_metadata(p: image.Planes, keep: bool) -> image.Planes:
    """``p`` itself, or (``keep`` False) a copy without its ICC profile and EXIF block."""
    if keep or (p.icc is None and p.exif is None):
        return p
    return image.Planes(p.rgb, p.pixel_format, p.alpha)


def _describe_metadata(p: image.Planes) -> str:
    parts = []
    if p.exif is not None:
        parts.append(f"EXIF {len(container.stored_exif(p.exif) or b'')} bytes compressed")
    if p.icc is not None and not image.is_srgb(p.icc):
        stored, packed = container.stored_icc(p.icc)
        parts.append(f"ICC profile {len(stored or b'')} bytes{' compressed' if packed else ''}")
    return ", ".join(parts) or "none"


@dataclass
class _Timer:
    stats: dict[str, float] | None
    device: torch.device

    def __call__(self, name: str, t0: float) -> float:
        if self.stats is None:
            return t0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        self.stats[name] = self.stats.get(name, 0.0) + (t1 - t0)
        return t1


#: ``progress(stage, done, total)``: called as a long encode or decode advances ("analysis",
#: "synthesis": tiles; "refine": gradient steps over all tiles; "quality search": probes, of at
#: most ``total``).
Progress = Callable[[str, int, int], None]


class Codec:
    """A loaded model on a device, ready to encode and decode.

    Args:
        model_id: a shipped model id (default: the shipped default), or None.
        device: "cpu", "cuda", "cuda:1", or "auto" (CUDA when present).
        weights: path to a ``.safetensors`` file made by ``vaecodec train``/``export``
            (fine-tuned models); overrides ``model_id``.
        deterministic: run the synthesis in float64, so decoded pixels do not depend on the
            thread count, batch size or tiling (about 3× slower to decode on a CPU). Without
            it, the decoded latents are still identical everywhere (exact entropy parameters),
            and pixels can differ by ±1 in a few places per megapixel across thread counts.
    """

    def __init__(
        self, model_id: str | None = None, *, device: str | torch.device = "cpu", weights: str | None = None,
        deterministic: bool = False,
    ) -> None:
        from pathlib import Path

        spec = spec_from_file(Path(weights)) if weights else get_spec(model_id)
        model = build_model(spec.arch, spec.N, spec.M, spec.levels)
        state = load_state_dict(spec.path, sha256=spec.sha256)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            from .errors import WeightsError

            msg = f"{spec.path}: weights do not fit model {spec.model_id} ({str(e).splitlines()[0]})"
            raise WeightsError(msg) from None
        self._setup(model, spec, device, deterministic)

    @classmethod
    def from_model(
        cls, model: HyperpriorModel, *, model_id: str = "test@0", tag: bytes = b"\0\0\0\0",
        device: str | torch.device = "cpu", deterministic: bool = False,
    ) -> Codec:
        """Wrap an in-memory model (tests, research). Its entropy tables must be ``update()``d."""
        self = cls.__new__(cls)
        spec = ModelSpec(model_id=model_id, filename="", sha256=tag.hex() + "0" * 56, N=model.N, M=model.M,
                         levels=model.levels, arch=arch_of(model))
        self._setup(model, spec, device, deterministic)
        return self

    def _setup(self, model: HyperpriorModel, spec: ModelSpec, device: str | torch.device, deterministic: bool) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            msg = "device 'cuda' requested but CUDA is not available"
            raise VaecodecError(msg)
        self.spec = spec
        self.model = model.eval()
        # Transforms on the device; hyper-synthesis, gains and entropy models stay on the CPU.
        for name in ("g_a", "h_a", "g_s"):
            getattr(model, name).to(self.device)
        self.factor = model.downsampling_factor
        self.coder = coder_for(model, self.device)
        self.deterministic = deterministic
        self._synthesis_dtype = torch.float64 if deterministic else torch.float32
        self._refine_model: HyperpriorModel | None = None
        self._local = threading.local()  # the progress callback of the call running in this thread
        if deterministic:
            self._g_s = copy.deepcopy(model.g_s).to(self.device, torch.float64)
            self._layout = torch.contiguous_format
        else:
            # channels-last (NHWC) activations, oneDNN's fast layout: on four Kodak images (2 threads,
            # Intel Xeon with AMX) mshc@1 decoded at 1.15 MP/s against 0.81-0.92 in NCHW, with the
            # same files byte for byte (docs/training-notes.md).
            # float64 has no such kernels, so the deterministic synthesis stays NCHW
            model.g_a.to(memory_format=torch.channels_last)
            model.g_s.to(memory_format=torch.channels_last)
            self._g_s = model.g_s
            self._layout = torch.channels_last

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    # ------------------------------------------------------------------ network stages

    def _levels(self, quality: float, n: int) -> torch.Tensor:
        return torch.full((n,), self.model.quality_to_level(quality))

    def _images_per_pass(self, n: int) -> int:
        """Images per analysis/synthesis pass in a batch call of ``n``.

        On CUDA a batch shares one pass. On the CPU one image at a time is faster: measured on
        8 Kodak images (2 threads), one batched analysis took 2.77 s against 1.66 s for eight
        single ones (synthesis 3.00 against 2.19 s).
        """
        return n if self.device.type == "cuda" else 1

    @contextmanager
    def _reporting(self, progress: Progress | None) -> Iterator[None]:
        old = getattr(self._local, "progress", None)
        self._local.progress = progress
        try:
            yield
        finally:
            self._local.progress = old

    def _report(self, stage: str, done: int, total: int) -> None:
        progress = getattr(self._local, "progress", None)
        if progress is not None:
            progress(stage, done, total)

    @torch.inference_mode()
    def _analysis(self, rgb: np.ndarray, quality: float) -> torch.Tensor:
        """B×H×W×3 uint8 → gained latents y (B×M×h×w, float32, CPU), tile by tile."""
        n, h, w, _ = rgb.shape
        f, s = self.factor, self.model.latent_stride
        hy, wy = -(-h // f) * (f // s), -(-w // f) * (f // s)
        g = self.model.gains(self._levels(quality, n))[0].to(self.device)
        y = torch.empty(n, self.spec.M, hy, wy)
        layout = list(tiles(hy, wy, TILE_LATENTS, self.model.tile_margin))
        for k, ((r0, r1, c0, c1), (a0, a1, b0, b1)) in enumerate(layout):
            # pixels of the tile with its margin, edge-replicated past the image (= the padding)
            rows = np.clip(np.arange(a0 * s, a1 * s), 0, h - 1)
            cols = np.clip(np.arange(b0 * s, b1 * s), 0, w - 1)
            crop = rgb[:, rows[:, None], cols[None, :]]
            x = torch.from_numpy(crop).to(self.device).permute(0, 3, 1, 2).float().div_(255)
            out = (self.model.g_a(x.contiguous(memory_format=self._layout)) * g).float().cpu().contiguous()
            y[..., r0:r1, c0:c1] = out[..., r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
            self._report("analysis", k + 1, len(layout))
        return y

    @torch.inference_mode()
    def _synthesis(self, y_hat: torch.Tensor, quality: float, h: int, w: int) -> np.ndarray:
        """B×M×h×w → B×H×W×3 uint8 (cropped to the original size), tile by tile."""
        n, _, hy, wy = y_hat.shape
        s = self.model.latent_stride
        ig = self.model.gains(self._levels(quality, n))[1].to(self.device)
        out = np.empty((n, h, w, 3), dtype=np.uint8)
        layout = list(tiles(hy, wy, TILE_LATENTS, self.model.tile_margin))
        for k, ((r0, r1, c0, c1), (a0, a1, b0, b1)) in enumerate(layout):
            self._report("synthesis", k, len(layout))
            y_tile = (y_hat[..., a0:a1, b0:b1].to(self.device) * ig).to(self._synthesis_dtype)
            x = self._g_s(y_tile.contiguous(memory_format=self._layout))
            x = x[..., (r0 - a0) * s : (r1 - a0) * s, (c0 - b0) * s : (c1 - b0) * s]
            x = x[..., : max(0, min(h, r1 * s) - r0 * s), : max(0, min(w, c1 * s) - c0 * s)]
            if x.shape[-1] == 0 or x.shape[-2] == 0:
                continue
            x = x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out[:, r0 * s : r0 * s + x.shape[1], c0 * s : c0 * s + x.shape[2]] = x
        self._report("synthesis", len(layout), len(layout))
        return out

    # ------------------------------------------------------------------ entropy coding

    def _code(self, y: torch.Tensor, quality: float, timer: _Timer) -> tuple[bytes, list[bytes], int]:
        """One image's y (1×M×h×w) → z stream, y streams, index CRC (:mod:`vaecodec.latent_coding`)."""
        return self.coder.encode(y, self.model.quality_to_level(quality), timer)

    def _decode_latents(self, vf: VaeFile, timer: _Timer) -> torch.Tensor:
        h = vf.header
        hz, wz = -(-h.height // self.factor), -(-h.width // self.factor)
        level = self.model.quality_to_level(h.quality)
        return self.coder.decode(vf.z, vf.y, level, hz, wz, h.index_crc, timer)

    # ------------------------------------------------------------------ public

    def encode(
        self, img: Any, *, quality: float = DEFAULT_QUALITY, target_bpp: float | None = None,
        stats: dict[str, float] | None = None, refine: int = 0, metadata: bool = True,
        progress: Progress | None = None,
    ) -> bytes:
        """Encode one image (PIL image, numpy array or torch tensor) to .vae bytes.

        Args:
            quality: 0..100; more quality means more bits and higher PSNR.
            target_bpp: search the quality so the file lands within 5 % of this many bits
                per pixel (whole file); overrides ``quality``. Every probe is refined too.
            stats: if a dict, filled with seconds per stage.
            refine: gradient steps that optimize the latents for this image before coding
                (:mod:`vaecodec.refine`): a slower encoder, and a lower rate–distortion cost
                from the same decoder. 0 (default) codes the analysis transform's latents.
            metadata: keep the image's ICC profile and EXIF block (PIL images carry them;
                default). The standard sRGB profile costs no bytes, other profiles and EXIF are
                compressed. False drops both.
            progress: called as ``progress(stage, done, total)`` while the work advances (tiles
                of a large image, refinement steps, probes of the quality search): see
                :data:`Progress`. The CLI draws a bar with it.
        """
        planes = _with_metadata(image.to_planes(img), metadata)
        refine = _check_refine(refine)
        with self._reporting(progress):
            if target_bpp is not None:
                return self._encode_target(planes, float(target_bpp), stats, refine)
            return self._encode_planes([planes], _check_quality(quality), stats, refine)[0]

    def encode_batch(
        self, images: Sequence[Any], *, quality: float = DEFAULT_QUALITY,
        stats: dict[str, float] | None = None, refine: int = 0, metadata: bool = True,
    ) -> list[bytes]:
        """Encode same-size images with one network pass; returns one self-contained file each.

        ``refine`` and ``metadata`` are as in :meth:`encode` (each image is refined on its own).
        """
        refine = _check_refine(refine)
        planes = [_with_metadata(image.to_planes(im, what=f"image {i}"), metadata) for i, im in enumerate(images)]
        if not planes:
            return []
        sizes = {(p.height, p.width) for p in planes}
        if len(sizes) > 1:
            msg = f"encode_batch needs images of one size, got {sorted(sizes)}; group them by size"
            raise ValueError(msg)
        return self._encode_planes(planes, _check_quality(quality), stats, refine)

    def _encode_planes(
        self, planes: list[image.Planes], quality: float, stats: dict[str, float] | None, refine: int = 0
    ) -> list[bytes]:
        timer = _Timer(stats, self.device)
        t = time.perf_counter()
        # one image is viewed, not copied (a 50-megapixel image is 150 MB)
        rgb = planes[0].rgb[None] if len(planes) == 1 else np.stack([p.rgb for p in planes])
        step = self._images_per_pass(len(planes))
        ys = [self._analysis(rgb[i : i + step], quality) for i in range(0, len(planes), step)]
        y = ys[0] if len(ys) == 1 else torch.cat(ys)
        del ys
        timer("analysis", t)
        if not refine:
            return [self._finish(p, y[i : i + 1], quality, timer) for i, p in enumerate(planes)]
        out = []
        for i, p in enumerate(planes):
            t = time.perf_counter()
            refined = self._refine(p.rgb, y[i : i + 1], quality, refine)
            timer("refine", t)
            try:
                out.append(self._finish(p, refined, quality, timer))
            except VaecodecError:  # refined latents beyond the coder's tables: code the analysis's y
                out.append(self._finish(p, y[i : i + 1], quality, timer))
        return out

    def _refine(self, rgb: np.ndarray, y: torch.Tensor, quality: float, steps: int) -> torch.Tensor:
        from .refine import refine_latents

        if self._refine_model is None:
            # the codec keeps h_s and the priors on the CPU; refinement wants the whole model on one device
            on_cpu = self.device.type == "cpu"
            self._refine_model = self.model if on_cpu else copy.deepcopy(self.model).to(self.device)
        level = self.model.quality_to_level(quality)
        return refine_latents(self._refine_model, y, rgb, level, steps, device=self.device,
                              progress=lambda done, total: self._report("refine", done, total))

    def _finish(self, p: image.Planes, y: torch.Tensor, quality: float, timer: _Timer) -> bytes:
        z_bytes, y_streams, crc = self._code(y, quality, timer)
        t = time.perf_counter()
        srgb = image.is_srgb(p.icc)
        hdr = Header(
            model_id=self.spec.model_id, weights_tag=self.spec.tag, height=p.height, width=p.width,
            pixel_format=p.pixel_format, quality=quality, index_crc=crc, has_icc=p.icc is not None,
            srgb=srgb, has_exif=p.exif is not None,
        )
        alpha = image.encode_alpha(p.alpha) if p.alpha is not None else None
        icc = None if srgb else p.icc
        out = container.pack(VaeFile(hdr, z_bytes, tuple(y_streams), alpha=alpha, icc=icc, exif=p.exif))
        timer("container", t)
        return out

    def _encode_target(
        self, p: image.Planes, target: float, stats: dict[str, float] | None, refine: int
    ) -> bytes:
        """Bisection on quality over the real file size (y is analysed once per probe)."""
        if not target > 0 or math.isinf(target):
            msg = f"target bpp must be a positive number, got {target}"
            raise ValueError(msg)
        pixels = p.height * p.width
        meta_bpp = 8 * container.metadata_bytes(None if image.is_srgb(p.icc) else p.icc, p.exif) / pixels
        if meta_bpp >= target:
            msg = (f"target {target:g} bpp is below what the metadata alone takes ({_describe_metadata(p)}: "
                   f"{meta_bpp:.3f} bpp); drop it (metadata=False, CLI --strip) or raise the target")
            raise VaecodecError(msg)
        cache: dict[float, bytes] = {}

        def probe(q: float) -> float:
            q = _check_quality(q)
            if q not in cache:
                cache[q] = self._encode_planes([p], q, stats, refine)[0]
                self._report("quality search", len(cache), 2 + 14)
            return 8 * len(cache[q]) / pixels

        lo, hi = QUALITY_RANGE
        b_lo, b_hi = probe(lo), probe(hi)
        if target < b_lo * (1 - TARGET_BPP_TOLERANCE) or target > b_hi * (1 + TARGET_BPP_TOLERANCE):
            msg = (
                f"target {target:g} bpp is outside what this image can reach "
                f"({b_lo:.3f} bpp at quality 0 .. {b_hi:.3f} bpp at quality 100)"
            )
            if meta_bpp > 0 and target < b_lo:
                msg += (f"; its metadata ({_describe_metadata(p)}) takes {meta_bpp:.3f} bpp of that "
                        f"(metadata=False, CLI --strip, drops it)")
            raise VaecodecError(msg)
        for _ in range(14):
            mid = (lo + hi) / 2
            if probe(mid) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 0.02:
                break
        best = min(cache, key=lambda q: abs(8 * len(cache[q]) / pixels - target))
        got = 8 * len(cache[best]) / pixels
        if abs(got - target) > TARGET_BPP_TOLERANCE * target:
            msg = f"closest file to {target:g} bpp is {got:.4f} bpp (quality {best:g}); the rate jumps there"
            raise VaecodecError(msg)
        return cache[best]

    def bits_map(self, img: Any, *, quality: float = DEFAULT_QUALITY) -> Any:
        """Where the bits go: the information content of y and z at every position of ``img``, with
        the reconstruction and its error (:func:`vaecodec.analysis.bits_map`, a ``BitsMap``)."""
        from .analysis import bits_map

        return bits_map(self, img, quality=quality)

    def latents(self, img: Any, *, quality: float = DEFAULT_QUALITY, output: str = "numpy") -> Any:
        """The latents y and z of ``img``, numpy or torch (:func:`vaecodec.analysis.latents`, a ``Latents``)."""
        from .analysis import latents

        return latents(self, img, quality=quality, output=output)

    def check_header(self, h: Header, what: str = "file") -> None:
        """Refuse files made with another model or other weights."""
        if h.model_id != self.spec.model_id:
            msg = f"{what} was made with model {h.model_id}; this codec has {self.spec.model_id}"
            raise ModelMismatchError(msg)
        if h.weights_tag != self.spec.tag:
            msg = (
                f"{what} was made with other weights of {h.model_id} (tag {h.weights_tag.hex()}, "
                f"loaded {self.spec.tag.hex()}); decode it with the vaecodec version that wrote it"
            )
            raise ModelMismatchError(msg)

    def decode(
        self, data: bytes, *, output: str = "numpy", stats: dict[str, float] | None = None,
        progress: Progress | None = None,
    ) -> Any:
        """Decode .vae bytes to an image: ``output`` is "numpy" (H×W×C or H×W uint8), "pil" or "torch".

        ``progress`` is called with the synthesis' tiles as in :meth:`encode`.
        """
        with self._reporting(progress):
            return self.decode_batch([data], output=output, stats=stats)[0]

    def decode_batch(
        self, datas: Sequence[bytes], *, output: str = "numpy", device: str | torch.device | None = None,
        stats: dict[str, float] | None = None,
    ) -> list[Any] | torch.Tensor:
        """Decode many files; files of the same size and quality share one synthesis pass.

        Args:
            output: "numpy" or "pil" return a list, one image per file (as :meth:`decode`);
                "torch" returns one N×C×H×W float32 tensor in [0, 1] (C is 1 for grayscale,
                2 with alpha, 3 for RGB, 4 for RGBA), so every file must have the same size and
                channel count (:class:`ValueError` otherwise, before any decoding).
            device: where the "torch" tensor goes (default: the CPU); only with ``output="torch"``.
            stats: if a dict, filled with seconds per stage.
        """
        if output not in image.OUTPUTS:
            msg = f"output must be one of {image.OUTPUTS}, got {output!r}"
            raise ValueError(msg)
        if device is not None and output != "torch":
            msg = f"device applies to output='torch' only, got output={output!r}"
            raise ValueError(msg)
        timer = _Timer(stats, self.device)
        files: list[VaeFile] = []
        for i, d in enumerate(datas):
            t = time.perf_counter()
            vf = container.unpack(d)
            self.check_header(vf.header, f"file {i}" if len(datas) > 1 else "file")
            timer("container", t)
            files.append(vf)
        if output == "torch":
            _check_stackable([vf.header for vf in files])
        latents: list[torch.Tensor | None] = [self._decode_latents(vf, timer) for vf in files]
        groups: dict[tuple[int, int, float], list[int]] = {}
        for i, vf in enumerate(files):
            groups.setdefault((vf.header.height, vf.header.width, vf.header.quality), []).append(i)
        results: list[Any] = [None] * len(files)
        for (h, w, q), idx in groups.items():
            t = time.perf_counter()
            step = self._images_per_pass(len(idx))
            chunks = []
            for j in range(0, len(idx), step):
                part = [latents[i] for i in idx[j : j + step]]
                for i in idx[j : j + step]:
                    latents[i] = None  # freed once synthesised: a huge image's latents are hundreds of MB
                y_hat = part[0] if len(part) == 1 else torch.cat(part)
                del part
                chunks.append(self._synthesis(y_hat, q, h, w))
                del y_hat
            rgb = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            del chunks
            t = timer("synthesis", t)
            for k, i in enumerate(idx):
                vf = files[i]
                alpha = image.decode_alpha(vf.alpha, h, w) if vf.alpha is not None else None
                arr = image.assemble(rgb[k], vf.header.pixel_format, alpha)
                results[i] = arr if output == "torch" else image.to_output(arr, output, _profile(vf), vf.exif)
            timer("container", t)
        if output == "torch":
            t = time.perf_counter()
            stacked = np.stack([a if a.ndim == 3 else a[:, :, None] for a in results])
            x = torch.from_numpy(stacked).to(device or "cpu").permute(0, 3, 1, 2)
            x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
            timer("container", t)
            return x
        return results


#: Channels of each pixel format in a decoded tensor.
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _check_stackable(headers: Sequence[Header]) -> None:
    """One N×C×H×W tensor needs one size and one channel count (checked before decoding)."""
    if not headers:
        msg = "decode_batch(output='torch') needs at least one file (an empty batch has no shape)"
        raise ValueError(msg)
    first = headers[0]
    for i, h in enumerate(headers):
        if (h.height, h.width, _CHANNELS[h.pixel_format.mode]) != (
            first.height, first.width, _CHANNELS[first.pixel_format.mode]
        ):
            msg = (
                f"decode_batch(output='torch') stacks images of one size and channel count: file 0 is "
                f"{first.width}x{first.height} {first.pixel_format.mode}, file {i} is {h.width}x{h.height} "
                f"{h.pixel_format.mode}; group the files by size, or use output='numpy'"
            )
            raise ValueError(msg)
