"""What else the VAE knows: where the bits go, which images are unusual, a map of the latents, samples.

The codec's model is a variational autoencoder, and its rate is the information content of an
image under the model (−log₂ p of the quantized latents: the ELBO's rate term). This module
reads it, and the rest of the network, for four tools:

* :func:`bits_map` — the bits of y and z at every position, from the entropy coder's own
  quantized tables (so the sum is the size of the coded streams, up to each rANS stream's
  few bytes of flush), spread over each latent's footprint on the image (y: 16×16 pixels,
  z: 64×64), with the reconstruction beside it; :func:`draw_bits_map` draws it.
* :func:`rank` — scores images by bits per pixel at a fixed quality and by reconstruction
  error (both per pixel, so image size does not weigh), most surprising first; :func:`draw_sheet`.
* :func:`latents`, :func:`embed` — y and z of an image; a descriptor per image (the channel
  means and spreads of the gain-free latents) projected to 2-D by PCA; :func:`draw_map`.
* :func:`sample` — images from the prior: z drawn from the factorized prior by inverse CDF of
  its coding tables, y from the conditional Gaussians given z (with the checkerboard model:
  the anchors from the hyperprior, then the others from the context), then the synthesis.

Everything runs through a :class:`~vaecodec.codec.Codec` (``Codec.bits_map`` and
``Codec.latents`` call in here). Drawing uses Pillow only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import image
from .entropy import BYPASS_BITS, PRECISION_BITS, TableCoder

if TYPE_CHECKING:
    from .codec import Codec

#: The quality :func:`rank` scores at (the codec's default).
RANK_QUALITY = 75.0
#: Side of a sample from :func:`sample` unless asked otherwise (pixels).
SAMPLE_SIZE = (256, 256)
#: Longest side of one panel of a drawn figure, and of a thumbnail on a sheet or map (pixels).
PANEL = 512
THUMB = 128
#: Largest count of bypass nibbles CompressAI's coder writes before a new count nibble.
_MAX_BYPASS = (1 << BYPASS_BITS) - 1


# ---------------------------------------------------------------------------- information content


def information(coder: TableCoder, symbols: np.ndarray, indexes: np.ndarray) -> np.ndarray:
    """Bits the rANS coder spends on each symbol under its table (float64, shaped like ``symbols``).

    −log₂ of the symbol's quantized probability (``PRECISION_BITS`` table precision); a symbol
    outside its table costs the escape symbol plus its bypass nibbles, exactly as CompressAI's
    ``RansEncoder`` writes them.
    """
    sym = np.asarray(symbols, dtype=np.int64)
    idx = np.asarray(indexes, dtype=np.int64)
    lengths = np.asarray(coder.lengths, dtype=np.int64)
    cdf = np.zeros((len(coder.cdfs), int(lengths.max())), dtype=np.int64)
    for t, row in enumerate(coder.cdfs):
        cdf[t, : lengths[t]] = row[: lengths[t]]
    v = sym - np.asarray(coder.offsets, dtype=np.int64)[idx]
    max_value = lengths[idx] - 2
    escaped = (v < 0) | (v >= max_value)
    coded = np.where(escaped, max_value, v)
    freq = cdf[idx, coded + 1] - cdf[idx, coded]
    bits = PRECISION_BITS - np.log2(freq.astype(np.float64))
    raw = np.where(v < 0, -2 * v - 1, 2 * (v - max_value))
    n = np.zeros_like(raw)
    r = np.where(escaped, raw, 0)
    while (r > 0).any():
        n += r > 0
        r >>= BYPASS_BITS
    nibbles = n + n // _MAX_BYPASS + 1
    return bits + np.where(escaped, BYPASS_BITS * nibbles, 0)


@dataclass(frozen=True)
class _Coded:
    y: torch.Tensor  # 1×M×h×w gained latents
    y_hat: torch.Tensor  # as the decoder gets them
    y_bits: np.ndarray  # h×w, summed over channels
    z_bits: np.ndarray  # hz×wz


@torch.inference_mode()
def _code(codec: Codec, planes: image.Planes, quality: float) -> _Coded:
    """The encoder's symbols and tables for one image, without the rANS coder."""
    level = codec.model.quality_to_level(quality)
    coder = codec.coder
    y = codec._analysis(planes.rgb[None], quality)
    z_symbols = coder.z_symbols(y, level)
    indexes, means = coder.hyper_params(z_symbols, level)
    y_symbols, y_indexes, y_hat = coder.y_symbols(y, indexes, means, level)
    z_bits = information(coder.z_coder, z_symbols.numpy()[0], coder.z_indexes(z_symbols.shape)).sum(0)
    y_bits = information(coder.y_coder, y_symbols.numpy()[0], y_indexes.numpy()[0]).sum(0)
    return _Coded(y, y_hat, y_bits, z_bits)


def _spread(bits: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """Bits per latent (h×w) → bits per pixel (height×width), each latent's bits spread evenly over
    the pixels of its stride×stride footprint inside the image. Latents wholly in the padding
    (beyond the image, up to the model's grid) are left out: see :attr:`BitsMap.padding_bits`."""
    hc, wc = -(-height // stride), -(-width // stride)
    cells = bits[:hc, :wc].astype(np.float64)
    count_r = np.minimum(stride, height - stride * np.arange(hc))
    count_c = np.minimum(stride, width - stride * np.arange(wc))
    cells = cells / (count_r[:, None] * count_c[None, :])
    return np.repeat(np.repeat(cells, stride, 0), stride, 1)[:height, :width]


@dataclass(frozen=True)
class BitsMap:
    """Where the bits of one image go (:func:`bits_map`).

    Attributes:
        bpp: H×W float64: bits per pixel at each pixel (y and z); sums to :attr:`bits` less
            :attr:`padding_bits`.
        y_bits: bits of y at each latent position (summed over channels), on the coder's padded grid.
        z_bits: bits of z at each hyper-latent position (summed over channels).
        reconstruction: the decoded image, as :meth:`Codec.decode` returns it (numpy).
        error: H×W float64: root mean square error over the colour channels (0..255 scale).
        quality: the quality coded at.
    """

    bpp: np.ndarray
    y_bits: np.ndarray
    z_bits: np.ndarray
    reconstruction: np.ndarray
    error: np.ndarray
    quality: float

    @property
    def bits(self) -> float:
        """Information content of y and z under the coder's tables (bits; the streams' size)."""
        return float(self.y_bits.sum() + self.z_bits.sum())

    @property
    def padding_bits(self) -> float:
        """Bits of the y latents that lie wholly in the padding (the image's edge pixels repeated up to
        the model's grid of 64): coded, but on no pixel of the image, so not in :attr:`bpp`."""
        return max(0.0, self.bits - float(self.bpp.sum()))

    @property
    def mean_bpp(self) -> float:
        return self.bits / self.bpp.size

    @property
    def mse(self) -> float:
        return float(np.mean(self.error**2))

    @property
    def psnr(self) -> float:
        return math.inf if self.mse == 0 else 10 * math.log10(255**2 / self.mse)


def _quality(q: float) -> float:
    from .codec import _check_quality

    return _check_quality(q)


def _codec(codec: Codec | None) -> Codec:
    from .codec import Codec

    return codec if codec is not None else Codec()


def bits_map(codec: Codec, img: Any, *, quality: float = 75.0) -> BitsMap:
    """Where the bits go in ``img`` (PIL image, numpy array, torch tensor) at ``quality``.

    The bits are the information content of each coded symbol under the coder's own quantized
    tables: z under the factorized prior, y under the Gaussians of the hyperprior (and, for the
    checkerboard model, the context pass's for the non-anchors). Their sum is the size of the z
    and y streams within each stream's few bytes of rANS flush; a file adds its header and,
    for images with alpha, the alpha stream (not in the map).
    """
    quality = _quality(quality)
    planes = image.to_planes(img)
    coded = _code(codec, planes, quality)
    h, w = planes.height, planes.width
    f = codec.model.latent_stride
    bpp = _spread(coded.y_bits, f, h, w) + _spread(coded.z_bits, codec.factor, h, w)
    rgb = codec._synthesis(coded.y_hat, quality, h, w)[0]
    err = np.sqrt(np.mean((rgb.astype(np.float64) - planes.rgb.astype(np.float64)) ** 2, axis=-1))
    recon = image.assemble(rgb, planes.pixel_format, planes.alpha)
    return BitsMap(bpp, coded.y_bits, coded.z_bits, recon, err, quality)


# ---------------------------------------------------------------------------- drawing helpers

# A perceptually ordered dark-to-bright palette (inferno's key colours), interpolated to 256 entries.
_KEYS = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                  (250, 193, 39), (252, 255, 164)], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_KEYS)), _KEYS[:, c])
                 for c in range(3)], -1).round().astype(np.uint8)


def _font(size: int = 13) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def colorize(values: np.ndarray, vmax: float) -> Image.Image:
    """A heat-map of ``values`` (2-D) from 0 (dark) to ``vmax`` (bright)."""
    t = np.clip(values / vmax if vmax > 0 else np.zeros_like(values), 0, 1)
    return Image.fromarray(_LUT[np.rint(t * 255).astype(np.int64)])


def _fit(im: Image.Image, side: int, resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """``im`` scaled so its longer side is ``side`` (up with nearest neighbours, down smoothly)."""
    s = side / max(im.size)
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return im.resize(size, Image.Resampling.NEAREST if s > 1 else resample)


def _shrink(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a float map to ``size`` (w, h) (nearest when enlarging)."""
    im = Image.fromarray(values.astype(np.float32), mode="F")
    up = size[0] >= im.width
    return np.asarray(im.resize(size, Image.Resampling.NEAREST if up else Image.Resampling.BOX))


def _colour_bar(width: int, vmax: float, label: str, font: Any) -> Image.Image:
    bar_h, pad = 12, 4
    out = Image.new("RGB", (width, bar_h + 34), "white")
    ramp = np.tile(np.linspace(0, vmax, width - 2 * pad)[None], (bar_h, 1))
    out.paste(colorize(ramp, vmax), (pad, 0))
    d = ImageDraw.Draw(out)
    for frac in (0, 0.5, 1):
        x = pad + round(frac * (width - 2 * pad - 1))
        d.line([(x, bar_h), (x, bar_h + 3)], fill="black")
        text = f"{frac * vmax:.3g}"
        tw = d.textlength(text, font=font)
        d.text((min(max(0, x - tw / 2), width - tw), bar_h + 4), text, fill="black", font=font)
    tw = d.textlength(label, font=font)
    d.text(((width - tw) / 2, bar_h + 19), label, fill="black", font=font)
    return out


def _panel(im: Image.Image, title: str, bar: Image.Image | None, font: Any) -> Image.Image:
    title_h = 20
    h = title_h + im.height + (bar.height + 4 if bar else 0)
    out = Image.new("RGB", (im.width, h), "white")
    d = ImageDraw.Draw(out)
    d.text((2, 3), title, fill="black", font=font)
    out.paste(im, (0, title_h))
    if bar:
        out.paste(bar, (0, title_h + im.height + 4))
    return out


def _row(panels: Sequence[Image.Image], gap: int = 10) -> Image.Image:
    w = sum(p.width for p in panels) + gap * (len(panels) + 1)
    h = max(p.height for p in panels) + 2 * gap
    out = Image.new("RGB", (w, h), "white")
    x = gap
    for p in panels:
        out.paste(p, (x, gap))
        x += p.width + gap
    return out


def draw_bits_map(bm: BitsMap, original: Any, *, side: int = PANEL) -> Image.Image:
    """The image, the bits per pixel and the reconstruction error side by side, with colour bars.

    Each colour scale ends at its map's 99.5th percentile (brighter values saturate), so a few
    extreme latents do not darken the rest.
    """
    planes = image.to_planes(original)
    font = _font()
    photo = _fit(Image.fromarray(planes.rgb), side)
    size = photo.size
    bpp = _shrink(bm.bpp, size)
    err = _shrink(bm.error, size)
    vb = float(np.percentile(bpp, 99.5)) or float(bpp.max())
    ve = float(np.percentile(err, 99.5)) or float(err.max()) or 1.0
    width = size[0]
    return _row([
        _panel(photo, f"{planes.width}x{planes.height}, quality {bm.quality:g}", None, font),
        _panel(colorize(bpp, vb), f"bits: {bm.mean_bpp:.3f} bpp, {bm.bits / 8:.0f} bytes"
               + (f" ({bm.padding_bits / 8:.0f} in padding)" if bm.padding_bits >= 4 else ""),
               _colour_bar(width, vb, "bits per pixel (y + z)", font), font),
        _panel(colorize(err, ve), f"error: PSNR {bm.psnr:.2f} dB",
               _colour_bar(width, ve, "RMS error (0..255)", font), font),
    ])


# ---------------------------------------------------------------------------- ranking


@dataclass(frozen=True)
class Ranked:
    """One image's surprise (:func:`rank`).

    Attributes:
        name: the path or name given.
        bpp: information content of y and z per pixel at the ranking quality.
        mse: mean squared reconstruction error per pixel and channel (0..255 scale).
        score: the mean of the two robust z-scores (of log bpp and log mse) within the ranked set.
        width, height: pixels.
    """

    name: str
    bpp: float
    mse: float
    score: float
    width: int
    height: int

    @property
    def psnr(self) -> float:
        return math.inf if self.mse == 0 else 10 * math.log10(255**2 / self.mse)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.name, "score": round(self.score, 4), "bpp": round(self.bpp, 5),
                "mse": round(self.mse, 4), "psnr": round(self.psnr, 3), "width": self.width, "height": self.height}


def _robust_z(v: np.ndarray) -> np.ndarray:
    med = np.median(v)
    scale = 1.4826 * np.median(np.abs(v - med))
    if not scale > 1e-9:
        scale = float(np.std(v)) or 1.0
    return (v - med) / scale


def surprise(codec: Codec, img: Any, *, quality: float = RANK_QUALITY) -> tuple[float, float]:
    """Bits per pixel (information content of y and z) and MSE of ``img`` at ``quality``."""
    bm = bits_map(codec, img, quality=quality)
    return bm.mean_bpp, bm.mse


def rank(images: Iterable[tuple[str, Any]], *, codec: Codec | None = None,
         quality: float = RANK_QUALITY) -> list[Ranked]:
    """Rank named images from most to least surprising to the model.

    Each image gets its bits per pixel at ``quality`` and its reconstruction MSE; the score is
    the mean of their robust z-scores (median and MAD over the set, on a log scale), so a photo
    that costs many bits, or that the model cannot reconstruct, ranks high. Both measures are
    per pixel: image size does not weigh.

    Args:
        images: ``(name, image)`` pairs; an image is anything :meth:`Codec.encode` takes.
    """
    codec = _codec(codec)
    quality = _quality(quality)
    rows = []
    for name, img in images:
        planes = image.to_planes(img, what=name)
        bpp, mse = surprise(codec, planes, quality=quality)
        rows.append((name, bpp, mse, planes.width, planes.height))
    if not rows:
        return []
    lb = np.log(np.array([r[1] for r in rows]) + 1e-6)
    lm = np.log(np.array([r[2] for r in rows]) + 1e-6)
    score = (_robust_z(lb) + _robust_z(lm)) / 2
    out = [Ranked(n, b, m, float(s), w, h) for (n, b, m, w, h), s in zip(rows, score)]
    return sorted(out, key=lambda r: -r.score)


def _label(im: Image.Image, lines: Sequence[str], font: Any, side: int) -> Image.Image:
    out = Image.new("RGB", (side, side + 16 * len(lines) + 4), "white")
    out.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    d = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        d.text((2, side + 2 + 16 * i), line, fill="black", font=font)
    return out


def _grid(tiles: Sequence[Image.Image], cols: int, gap: int = 6) -> Image.Image:
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
    out = Image.new("RGB", (cols * (tw + gap) + gap, rows * (th + gap) + gap), "white")
    for i, t in enumerate(tiles):
        out.paste(t, (gap + (i % cols) * (tw + gap), gap + (i // cols) * (th + gap)))
    return out


def _thumb(img: Any, side: int) -> Image.Image:
    planes = image.to_planes(img)
    return _fit(Image.fromarray(planes.rgb), side, Image.Resampling.BOX)


def draw_sheet(ranked: Sequence[Ranked], images: dict[str, Any], *, side: int = THUMB,
               cols: int = 6) -> Image.Image:
    """A contact sheet of ranked images in rank order, each with its rank, name, bpp and PSNR."""
    font = _font(11)
    tiles = []
    for i, r in enumerate(ranked, 1):
        name = Path(r.name).name
        name = name if len(name) <= 20 else name[:19] + "…"
        tiles.append(_label(_thumb(images[r.name], side), [f"{i}. {name}", f"{r.bpp:.3f} bpp {r.psnr:.1f} dB",
                                                           f"score {r.score:+.2f}"], font, side))
    return _grid(tiles, cols)


# ---------------------------------------------------------------------------- latents and the map


@dataclass(frozen=True)
class Latents:
    """The latents of one image at a quality (:func:`latents`).

    Attributes:
        y: M×h×w, the analysis transform's output times the quality's gain, unquantized
            (the coder rounds it around the hyperprior's means); h, w are the padded size / 16.
        z: N×h/4×w/4, the hyper-analysis' output times its gain, quantized as coded (z_hat).
        gain: M, the gain of y at this quality (``y / gain[:, None, None]`` is the same at every quality).
        quality: the quality.
    """

    y: Any
    z: Any
    gain: Any
    quality: float


@torch.inference_mode()
def latents(codec: Codec, img: Any, *, quality: float = 75.0, output: str = "numpy") -> Latents:
    """The latents y and z of ``img`` as numpy arrays (``output="numpy"``) or torch tensors (``"torch"``)."""
    if output not in ("numpy", "torch"):
        msg = f"output must be 'numpy' or 'torch', got {output!r}"
        raise ValueError(msg)
    quality = _quality(quality)
    planes = image.to_planes(img)
    level = codec.model.quality_to_level(quality)
    y = codec._analysis(planes.rgb[None], quality)
    z_hat = codec.coder.z_symbols(y, level).float() + codec.coder._medians
    gain = codec.model.gains(torch.full((1,), level))[0].reshape(-1).float()
    parts = (y[0], z_hat[0], gain)
    if output == "numpy":
        parts = tuple(p.numpy() for p in parts)
    return Latents(*parts, quality=quality)


def descriptor(codec: Codec, img: Any) -> np.ndarray:
    """A size-independent vector for an image: the mean and standard deviation of each channel of
    the gain-free latents y (2M float64 values)."""
    lat = latents(codec, img)
    y = lat.y / lat.gain[:, None, None]
    flat = y.reshape(y.shape[0], -1).astype(np.float64)
    return np.concatenate([flat.mean(1), flat.std(1)])


@dataclass(frozen=True)
class Embedding:
    """Images placed on a plane by the first two principal components of their descriptors.

    Attributes:
        names: the names given, in order.
        coords: n×2 float64 positions.
        descriptors: n×D, the descriptors (:func:`descriptor`).
        explained: the share of the variance along each of the two axes.
    """

    names: list[str]
    coords: np.ndarray
    descriptors: np.ndarray
    explained: tuple[float, float]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{"file": n, "x": round(float(x), 5), "y": round(float(y), 5)}
                for n, (x, y) in zip(self.names, self.coords)]


def project(descriptors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """PCA to 2-D (torch's SVD) of centred descriptors; signs fixed so the result is deterministic.

    The descriptors are not standardized: every entry is on the latents' one scale, and scaling
    up channels that barely vary across images would let their noise pull near-duplicates apart.
    """
    x = torch.from_numpy(np.asarray(descriptors, dtype=np.float64))
    n = x.shape[0]
    if n < 2:
        return np.zeros((n, 2)), (0.0, 0.0)
    x = x - x.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(2, s.numel())
    comps = vh[:k]
    # each axis points where its largest loading is positive
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    coords = torch.zeros(n, 2, dtype=torch.float64)
    coords[:, :k] = x @ (comps * signs).T
    var = s**2
    explained = [float(v / var.sum()) if var.sum() > 0 else 0.0 for v in var[:k]] + [0.0] * (2 - k)
    return coords.numpy(), (explained[0], explained[1])


def embed(images: Iterable[tuple[str, Any]], *, codec: Codec | None = None) -> Embedding:
    """A 2-D map of named images: PCA of their latent descriptors (:func:`descriptor`)."""
    codec = _codec(codec)
    names, desc = [], []
    for name, img in images:
        names.append(name)
        desc.append(descriptor(codec, image.to_planes(img, what=name)))
    d = np.stack(desc) if desc else np.zeros((0, 2 * codec.spec.M))
    coords, explained = project(d)
    return Embedding(names, coords, d, explained)


def draw_map(emb: Embedding, images: dict[str, Any], *, size: int = 1024, side: int = 96) -> Image.Image:
    """Thumbnails placed at their map positions (first principal component to the right)."""
    font = _font(14)
    margin = side // 2 + 24
    out = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(out)
    c = emb.coords
    lo, hi = (c.min(0), c.max(0)) if len(c) else (np.zeros(2), np.ones(2))
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    for name, (x, y) in zip(emb.names, c):
        t = _thumb(images[name], side)
        px = margin + (x - lo[0]) / span[0] * (size - 2 * margin)
        py = size - margin - (y - lo[1]) / span[1] * (size - 2 * margin)
        out.paste(t, (round(px - t.width / 2), round(py - t.height / 2)))
    d.text((8, size - 22), f"x: PC1 ({100 * emb.explained[0]:.0f} % of variance)", fill="black", font=font)
    d.text((8, 6), f"y: PC2 ({100 * emb.explained[1]:.0f} %)", fill="black", font=font)
    return out


# ---------------------------------------------------------------------------- sampling


def draw_symbols(coder: TableCoder, indexes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Symbols drawn by inverse CDF from the coder's quantized tables (int32, shaped like ``indexes``).

    The escape slot (values beyond a table, probability about 2⁻¹⁶) is never drawn.
    """
    flat = np.asarray(indexes).reshape(-1)
    out = np.empty(flat.shape, dtype=np.int32)
    for t in np.unique(flat):
        m = flat == t
        n = int(coder.lengths[t])
        cdf = np.asarray(coder.cdfs[t][:n], dtype=np.int64)
        u = rng.integers(0, cdf[n - 2], size=int(m.sum()))
        out[m] = np.searchsorted(cdf, u, side="right") - 1 + coder.offsets[t]
    return out.reshape(np.shape(indexes))


@torch.inference_mode()
def sample(codec: Codec, n: int = 16, *, quality: float = 75.0, seed: int = 0,
           size: tuple[int, int] = SAMPLE_SIZE) -> list[np.ndarray]:
    """``n`` images (H×W×3 uint8) drawn from the model's prior at ``quality``; the same for a seed.

    z comes from the factorized prior, y from the Gaussians the hyperprior (and, with a
    checkerboard model, the context given the drawn anchors) assigns, both by inverse CDF of
    the coder's tables; the synthesis turns y into pixels.
    """
    h, w = size
    if n < 1 or h < 1 or w < 1:
        msg = f"need n >= 1 and a positive size, got n={n}, size={h}x{w}"
        raise ValueError(msg)
    image._check_size(h, w, f"sample size {h}x{w}")
    quality = _quality(quality)
    level = codec.model.quality_to_level(quality)
    coder = codec.coder
    rng = np.random.default_rng(seed)
    hz, wz = -(-h // codec.factor), -(-w // codec.factor)
    out = []
    for _ in range(n):
        z = torch.from_numpy(draw_symbols(coder.z_coder, coder.z_indexes((1, coder.N, hz, wz)), rng))[None]
        indexes, means = coder.hyper_params(z, level)
        y_hat = torch.from_numpy(draw_symbols(coder.y_coder, indexes.numpy(), rng)).float() + means
        if coder.passes == 2:
            anchors = torch.from_numpy(coder.anchors(*y_hat.shape[-2:]))
            y_a = torch.where(anchors, y_hat, 0.0)
            idx2, mu2 = coder.context_params(indexes, means, y_a, level)
            rest = torch.from_numpy(draw_symbols(coder.y_coder, idx2.numpy(), rng)).float() + mu2
            y_hat = torch.where(anchors, y_hat, rest)
        out.append(codec._synthesis(y_hat, quality, h, w)[0])
    return out


def draw_samples(samples: Sequence[np.ndarray], cols: int | None = None) -> Image.Image:
    """Samples in a grid (about square)."""
    cols = cols or math.ceil(math.sqrt(len(samples)))
    return _grid([Image.fromarray(s) for s in samples], cols, gap=4)


__all__ = [
    "RANK_QUALITY", "BitsMap", "Embedding", "Latents", "Ranked", "bits_map", "colorize", "descriptor",
    "draw_bits_map", "draw_map", "draw_samples", "draw_sheet", "draw_symbols", "embed", "information",
    "latents", "project", "rank", "sample", "surprise",
]
