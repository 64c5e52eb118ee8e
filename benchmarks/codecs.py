"""Codec adapters with every option pinned: JPEG, WebP, AVIF, JPEG XL, JPEG 2000 and vaecodec.

Every adapter takes and returns H×W×3 uint8 RGB arrays and works on in-memory bytes, so
disk I/O is never measured and the byte count is the whole file (headers included).
``options()`` returns the pinned settings and library versions that go into the results.
Importing this module does not import torch; vaecodec is imported when its adapter is built.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image, features

QUALITY_5_95: tuple[float, ...] = tuple(float(q) for q in range(5, 96, 5))


class Codec(Protocol):
    """What the benchmarks need from a codec."""

    name: str  # identifier used in files and on the command line, e.g. "jpeg-420"
    label: str  # human-readable name for plots and tables
    param: str  # what the quality knob means
    grid: tuple[float, ...]  # knob values of the full RD sweep (increasing rate)
    quick_grid: tuple[float, ...]  # fewer points for --quick
    default_quality: float  # knob value used for throughput
    search_range: tuple[int, int]  # integer knob range for matching a file size

    def options(self) -> dict[str, Any]: ...

    def encode(self, image: np.ndarray, quality: float) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...


def _as_rgb8(arr: np.ndarray, who: str) -> np.ndarray:
    """Check a decoder's output and return it as contiguous H×W×3 uint8."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        msg = f"{who} decoded to dtype {arr.dtype}, expected uint8"
        raise TypeError(msg)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        msg = f"{who} decoded to shape {arr.shape}, expected H×W×3"
        raise ValueError(msg)
    return np.ascontiguousarray(arr[:, :, :3])


def _check_input(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        msg = f"expected an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}"
        raise ValueError(msg)


@dataclass
class PillowCodec:
    """A codec reached through ``PIL.Image.save`` into a ``BytesIO`` (quality is an int)."""

    name: str
    label: str
    format: str
    save_options: dict[str, Any]
    library: str
    grid: tuple[float, ...]
    quick_grid: tuple[float, ...]
    default_quality: float
    param: str = "quality (Pillow, 0-100)"
    search_range: tuple[int, int] = (1, 100)

    def options(self) -> dict[str, Any]:
        return {"via": "Pillow Image.save", "format": self.format, **self.save_options,
                "param": self.param, "library": self.library}

    def encode(self, image: np.ndarray, quality: float) -> bytes:
        _check_input(image)
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format=self.format, quality=int(round(quality)),
                                           **self.save_options)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return _as_rgb8(np.asarray(im.convert("RGB")), self.label)


@dataclass
class ImagecodecsCodec:
    """A codec reached through ``imagecodecs.<x>_encode(data, level=..., **options)``."""

    name: str
    label: str
    encode_fn: Callable[..., bytes]
    decode_fn: Callable[..., np.ndarray]
    encode_options: dict[str, Any]
    library: str
    grid: tuple[float, ...]
    quick_grid: tuple[float, ...]
    default_quality: float
    param: str
    search_range: tuple[int, int]
    decode_options: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {"via": f"imagecodecs.{self.encode_fn.__name__}", "level": "the knob",
                **self.encode_options, "param": self.param, "library": self.library}

    def encode(self, image: np.ndarray, quality: float) -> bytes:
        _check_input(image)
        return bytes(self.encode_fn(image, level=int(round(quality)), **self.encode_options))

    def decode(self, data: bytes) -> np.ndarray:
        return _as_rgb8(self.decode_fn(data, **self.decode_options), self.label)


#: Refinement steps of the ``vaecodec-refine`` variant (``vaecodec encode --refine``).
REFINE_STEPS = 10


class VaecodecCodec:
    """vaecodec through ``vaecodec.Codec`` (the shipped weights, loaded once).

    With ``refine`` > 0 it is the slow-encoder variant ``vaecodec-refine``: the same decoder,
    latents optimized per image (``Codec.encode(refine=...)``), on a coarser grid to bound the
    sweep's time.
    """

    param = "quality (vaecodec, 0-100)"
    quick_grid: tuple[float, ...] = (0.0, 25.0, 50.0, 75.0, 100.0)
    default_quality = 75.0
    search_range = (0, 100)

    def __init__(self, device: str = "cpu", refine: int = 0, model_id: str | None = None) -> None:
        import torch
        import vaecodec

        self._vaecodec = vaecodec
        self._torch = torch
        self.device = device
        self.refine = refine
        self.name = "vaecodec-refine" if refine else "vaecodec"
        self.label = f"vaecodec, refine {refine}" if refine else "vaecodec"
        if model_id is not None:  # another shipped model than the default (an older generation)
            self.name += f":{model_id}"
            self.label += f" ({model_id})"
        step = 25 if refine else 10
        self.grid: tuple[float, ...] = tuple(float(q) for q in range(0, 101, step))
        self.codec = vaecodec.Codec(model_id, device=device)
        self._model_id: str | None = None

    def options(self) -> dict[str, Any]:
        return {"via": "vaecodec.Codec", "device": self.device, "model_id": self._model_id,
                "refine": self.refine,
                "weights_sha256": self.codec.spec.sha256,
                "torch_threads": self._torch.get_num_threads(), "param": self.param,
                "library": f"vaecodec {self._vaecodec.__version__}, torch {self._torch.__version__}"}

    def encode(self, image: np.ndarray, quality: float, stats: dict[str, float] | None = None) -> bytes:
        _check_input(image)
        data = bytes(self.codec.encode(image, quality=float(quality), stats=stats, refine=self.refine))
        if self._model_id is None:
            self._model_id = str(self._vaecodec.read_header(data).model_id)
        return data

    def decode(self, data: bytes, stats: dict[str, float] | None = None) -> np.ndarray:
        return _as_rgb8(self.codec.decode(data, output="numpy", stats=stats), self.label)

    def encode_batch(self, images: Sequence[np.ndarray], quality: float) -> list[bytes]:
        datas = self.codec.encode_batch(list(images), quality=float(quality), refine=self.refine)
        return [bytes(d) for d in datas]

    def decode_batch(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        return [_as_rgb8(a, self.label) for a in self.codec.decode_batch(list(datas), output="numpy")]


class TorchvisionJpeg:
    """JPEG through torchvision's ``encode_jpeg``/``decode_jpeg`` on a torch device (throughput only).

    On CUDA these run on the GPU (nvJPEG), so vaecodec's GPU figures have a JPEG on the same
    device beside them; on the CPU they run libjpeg(-turbo) inside torchvision. Like
    :class:`VaecodecCodec` a call takes uint8 arrays and returns bytes, and the other way, so the
    host↔device copies are timed too. torchvision's encoder writes 4:2:0. (torchvision 0.29
    deprecates these functions in favour of TorchCodec; they still work and are what the
    benchmark's GPU comparison asks for.)
    """

    param = "quality (libjpeg scale, 1-100)"
    default_quality = 75.0

    def __init__(self, device: str = "cpu") -> None:
        import torch
        import torchvision

        self._torch = torch
        self._tv = torchvision
        self.device = device
        self.name = "jpeg-torchvision"
        self.label = "JPEG (torchvision, nvJPEG)" if device.startswith("cuda") else "JPEG (torchvision, libjpeg)"

    def options(self) -> dict[str, Any]:
        backend = "nvJPEG" if self.device.startswith("cuda") else "libjpeg (torchvision)"
        return {"via": "torchvision.io.encode_jpeg/decode_jpeg", "device": self.device, "backend": backend,
                "torch_threads": self._torch.get_num_threads(), "param": self.param,
                "library": f"torchvision {self._tv.__version__}, torch {self._torch.__version__}"}

    def encode_batch(self, images: Sequence[np.ndarray], quality: float) -> list[bytes]:
        from torchvision.io import encode_jpeg

        for im in images:
            _check_input(im)
        tensors = [self._torch.from_numpy(im).permute(2, 0, 1).contiguous().to(self.device) for im in images]
        out = encode_jpeg(tensors, quality=int(quality))
        return [bytes(t.cpu().numpy().tobytes()) for t in out]

    def decode_batch(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        from torchvision.io import ImageReadMode, decode_jpeg

        inputs = [self._torch.frombuffer(bytearray(d), dtype=self._torch.uint8) for d in datas]
        out = decode_jpeg(inputs, mode=ImageReadMode.RGB, device=self.device)
        return [_as_rgb8(t.permute(1, 2, 0).cpu().numpy(), self.label) for t in out]

    def encode(self, image: np.ndarray, quality: float) -> bytes:
        return self.encode_batch([image], quality)[0]

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_batch([data])[0]


def _pillow_versions() -> dict[str, str | None]:
    import PIL

    return {"Pillow": PIL.__version__, "libjpeg-turbo": features.version_feature("libjpeg_turbo"),
            "libwebp": features.version("webp"), "libavif": features.version("avif")}


def baseline_codecs(threads: int = 1) -> list[Codec]:
    """Every available baseline codec, options pinned; ``threads`` goes to codecs that take it."""
    import imagecodecs

    pil = _pillow_versions()
    icv = imagecodecs.version(dict)
    out: list[Codec] = []
    for sub in ("4:2:0", "4:4:4"):
        out.append(PillowCodec(
            name=f"jpeg-{sub.replace(':', '')[:3]}", label=f"JPEG {sub}", format="JPEG",
            save_options={"subsampling": sub, "optimize": True, "progressive": False, "keep_rgb": False},
            library=f"Pillow {pil['Pillow']}, libjpeg-turbo {pil['libjpeg-turbo']} (single-threaded)",
            grid=QUALITY_5_95, quick_grid=(5.0, 15.0, 30.0, 50.0, 75.0, 95.0), default_quality=75.0))
    if features.check("webp"):
        out.append(PillowCodec(
            name="webp", label="WebP", format="WEBP",
            save_options={"method": 6, "lossless": False, "exact": False},
            library=f"Pillow {pil['Pillow']}, libwebp {pil['libwebp']} (single-threaded)",
            grid=QUALITY_5_95, quick_grid=(5.0, 20.0, 50.0, 75.0, 95.0), default_quality=80.0))
    avif_grid = (5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)
    avif_quick = (10.0, 30.0, 50.0, 70.0, 90.0)
    for sub in ("4:2:0", "4:4:4"):
        name, label = f"avif-{sub.replace(':', '')[:3]}", f"AVIF {sub}"
        if features.check("avif"):
            from PIL import AvifImagePlugin

            aom = [v for v in AvifImagePlugin._avif.codec_versions().split(", ") if v.startswith("aom")]
            out.append(PillowCodec(
                name=name, label=label, format="AVIF",
                save_options={"subsampling": sub, "speed": 6, "codec": "aom", "range": "full",
                              "max_threads": threads},
                library=f"Pillow {pil['Pillow']}, libavif {pil['libavif']}, {', '.join(aom) or 'aom'}",
                grid=avif_grid, quick_grid=avif_quick, default_quality=75.0))
        elif imagecodecs.AVIF.available:
            out.append(ImagecodecsCodec(
                name=name, label=label, encode_fn=imagecodecs.avif_encode, decode_fn=imagecodecs.avif_decode,
                encode_options={"speed": 6, "pixelformat": sub.replace(":", "")[:3], "codec": "aom",
                                "numthreads": threads},
                library=f"imagecodecs {icv['imagecodecs']}, libavif {icv.get('libavif')}",
                grid=avif_grid, quick_grid=avif_quick, default_quality=75.0,
                param="quality (libavif, 0-100)", search_range=(1, 100)))
    if imagecodecs.JPEGXL.available:
        out.append(ImagecodecsCodec(
            name="jxl", label="JPEG XL", encode_fn=imagecodecs.jpegxl_encode,
            decode_fn=imagecodecs.jpegxl_decode,
            encode_options={"effort": 7, "decodingspeed": 0, "lossless": False, "numthreads": threads},
            decode_options={"numthreads": threads},
            library=f"imagecodecs {icv['imagecodecs']}, libjxl {icv.get('libjxl')}",
            grid=(5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0),
            quick_grid=(10.0, 30.0, 50.0, 70.0, 90.0), default_quality=90.0,
            param="quality (libjxl, mapped to butteraugli distance)", search_range=(1, 100)))
    if imagecodecs.JPEG2K.available:
        out.append(ImagecodecsCodec(
            name="jpeg2000", label="JPEG 2000", encode_fn=imagecodecs.jpeg2k_encode,
            decode_fn=imagecodecs.jpeg2k_decode,
            encode_options={"codecformat": "jp2", "reversible": False, "mct": True, "numthreads": threads},
            decode_options={"numthreads": threads},
            library=f"imagecodecs {icv['imagecodecs']}, OpenJPEG {icv.get('openjpeg')}",
            grid=tuple(float(d) for d in range(24, 47, 2)), quick_grid=(26.0, 30.0, 34.0, 38.0, 42.0),
            default_quality=36.0, param="target PSNR of the single quality layer (dB, OpenJPEG)",
            search_range=(15, 60)))
    return out


def _other_models() -> list[str]:
    """Shipped model ids besides the default (benchmarked as ``vaecodec:<id>``)."""
    try:
        from vaecodec.weights import available_models, default_model_id

        default = default_model_id()
        return [s.model_id for s in available_models() if s.model_id != default]
    except Exception:  # no vaecodec or no manifest: the vaecodec entry reports why
        return []


def make_codecs(names: Sequence[str] | None, *, threads: int = 1, device: str = "cpu",
                ) -> tuple[list[Codec], dict[str, str]]:
    """Build the requested codecs (all when ``names`` is None).

    Returns the codecs and, for codecs that could not be built, the reason. A codec asked
    for by name that cannot be built raises ``RuntimeError``; with ``names=None`` it is
    only reported.
    """
    baselines = {c.name: c for c in baseline_codecs(threads)}
    others = _other_models()
    known = ["vaecodec", "vaecodec-refine", *(f"vaecodec:{m}" for m in others), *baselines]
    # the slow-encoder variant runs only when asked for by name
    wanted = [n for n in known if n != "vaecodec-refine"] if names is None else list(names)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        msg = f"unknown codec(s) {', '.join(unknown)}; available: {', '.join(known)}"
        raise ValueError(msg)
    codecs: list[Codec] = []
    skipped: dict[str, str] = {}
    for n in wanted:
        if n in baselines:
            codecs.append(baselines[n])
            continue
        try:
            model_id = n.split(":", 1)[1] if ":" in n else None
            refine = REFINE_STEPS if n == "vaecodec-refine" else 0
            codecs.append(VaecodecCodec(device=device, refine=refine, model_id=model_id))
        except Exception as exc:  # missing package, missing weights, API not there yet
            if names is not None:
                msg = f"vaecodec could not be constructed: {type(exc).__name__}: {exc}"
                raise RuntimeError(msg) from exc
            skipped[n] = f"{type(exc).__name__}: {exc}"
    return codecs, skipped
