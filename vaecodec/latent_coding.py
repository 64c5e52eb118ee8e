"""Latent coding: gained latents and a level in, rANS streams out, and back.

The entropy stage of the codec, behind one small interface (:class:`LatentCoder`): ``encode``
turns one image's gained latents y (1×M×h×w, float32, CPU) at a level into a z stream, y
streams and the CRC of the table indexes; ``decode`` inverts it. Two implementations, chosen
by the model's architecture:

* :class:`HyperpriorCoder` — the mean-scale hyperprior: z under the factorized prior, then
  every y latent under a Gaussian whose scale (as a table index) and mean come from the exact
  hyper-synthesis (:class:`~vaecodec.exact.ExactEntropyParameters`).
* :class:`CheckerboardCoder` — two passes (He et al., CVPR 2021): the anchors (``(row + col)``
  even) as above, then the other half with parameters the exact context network
  (:class:`~vaecodec.exact.ExactContext`) computes from the decoded anchors.

Everything here runs on the CPU but the hyper-analysis, and every value that chooses a
table or a mean is computed in exact integer arithmetic, so encoder and decoder agree on any
machine. This and :mod:`vaecodec.model` are the only modules that read CompressAI's private
attributes.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .entropy import TableCoder
from .errors import DesyncError, FormatError
from .exact import ExactContext, ExactEntropyParameters
from .model import CheckerboardModel, HyperpriorModel
from .tiling import tiles

#: Latent symbols per rANS stream; larger images split y into row bands of about this size,
#: which bounds the coder's memory. Part of the format (the band height is derived from it).
Y_CHUNK_SYMBOLS = 1 << 20
#: The exact entropy parameters are computed in tiles of this many y latents per side.
EXACT_TILE = 64

Timer = Callable[[str, float], float]


def band_rows(latent_width: int, channels: int) -> int:
    """Latent rows per y stream (see :data:`Y_CHUNK_SYMBOLS`)."""
    return max(1, Y_CHUNK_SYMBOLS // (channels * latent_width))


def _no_timer(name: str, t0: float) -> float:
    return time.perf_counter()


class HyperpriorCoder:
    """Latent coding with the mean-scale hyperprior (see the module docstring)."""

    passes = 1

    def __init__(self, model: HyperpriorModel, device: torch.device) -> None:
        self.model, self.device = model, device
        self.N, self.M, self.levels = model.N, model.M, model.levels
        eb, gc = model.entropy_bottleneck, model.gaussian_conditional
        self._medians = eb._get_medians().detach().reshape(1, -1, 1, 1).float().cpu()
        self.z_coder = TableCoder(eb._quantized_cdf, eb._cdf_length, eb._offset)
        self.y_coder = TableCoder(gc._quantized_cdf, gc._cdf_length, gc._offset)
        self.exact = ExactEntropyParameters.from_model(model)

    # ------------------------------------------------------------------ parameters

    def z_indexes(self, shape: tuple[int, ...]) -> np.ndarray:
        """Table index of every z element: its channel."""
        n, h, w = shape[-3:]
        return np.broadcast_to(np.arange(n, dtype=np.int32)[:, None, None], (n, h, w))

    def hyper_params(self, z_symbols: Tensor, level: float) -> tuple[Tensor, Tensor]:
        """z symbols (1×N×h×w) → (table indexes uint8, means), exactly, in tiles of EXACT_TILE."""
        _, _, hz, wz = z_symbols.shape
        up = self.exact.upsampling
        hy, wy = hz * up, wz * up
        indexes = torch.empty(1, self.M, hy, wy, dtype=torch.uint8)
        means = torch.empty(1, self.M, hy, wy, dtype=torch.float32)
        for r0 in range(0, hy, EXACT_TILE):
            r1 = min(hy, r0 + EXACT_TILE)
            z0, z1, ro = self.exact.z_window(r0, r1, hz)
            for c0 in range(0, wy, EXACT_TILE):
                c1 = min(wy, c0 + EXACT_TILE)
                w0, w1, co = self.exact.z_window(c0, c1, wz)
                idx, mu = self.exact(z_symbols[..., z0:z1, w0:w1], level)
                indexes[..., r0:r1, c0:c1] = idx[..., ro : ro + r1 - r0, co : co + c1 - c0]
                means[..., r0:r1, c0:c1] = mu[..., ro : ro + r1 - r0, co : co + c1 - c0]
        return indexes, means

    def z_symbols(self, y: Tensor, level: float) -> Tensor:
        """The z symbols (1×N×h×w int32) the encoder codes for gained latents ``y`` (1×M×h×w)."""
        hg = self.model.gains(torch.full((1,), level))[2]
        z = self.model.h_a(y.to(self.device)).float().cpu() * hg
        return torch.round(z - self._medians).to(torch.int32)

    # ------------------------------------------------------------------ y streams

    def _bands(self, h: int, w: int) -> list[slice]:
        rows = band_rows(w, self.M)
        return [slice(r, r + rows) for r in range(0, h, rows)]

    def y_symbols(self, y: Tensor, indexes: Tensor, means: Tensor, level: float) -> tuple[Tensor, Tensor, Tensor]:
        """What the encoder codes for ``y`` given the hyperprior's tables and means: the symbols
        (int32), the table index of each (uint8) and the latents the decoder gets (symbols + means).

        :mod:`vaecodec.analysis` reads the coder's probabilities through this, so its bits are the streams'.
        """
        symbols = torch.round(y - means)
        return symbols.to(torch.int32), indexes, symbols + means

    def _encode_y(self, y: Tensor, indexes: Tensor, means: Tensor, level: float) -> tuple[list[bytes], int]:
        sym, indexes, _ = self.y_symbols(y, indexes, means, level)
        symbols, idx = sym.numpy(), indexes.numpy()
        streams = [self.y_coder.encode(symbols[..., b, :], idx[..., b, :]) for b in self._bands(*y.shape[-2:])]
        return streams, zlib.crc32(idx.tobytes())

    def _decode_y(self, streams: tuple[bytes, ...], indexes: Tensor, means: Tensor, level: float,
                  crc: int) -> Tensor:
        self._check_crc(indexes, crc)
        bands = self._bands(*indexes.shape[-2:])
        self._check_count(streams, len(bands))
        idx = indexes.numpy()
        y_hat = means  # filled in place: symbols + means, band by band
        for i, (s, b) in enumerate(zip(streams, bands)):
            y_hat[..., b, :] += torch.from_numpy(self.y_coder.decode(s, idx[..., b, :], f"y stream {i}")).float()
        return y_hat

    @staticmethod
    def _check_crc(indexes: Tensor, crc: int) -> None:
        got = zlib.crc32(indexes.numpy().tobytes())
        if got != crc:
            msg = (
                f"entropy parameters differ from the encoder's (index CRC 0x{got:08x}, file says "
                f"0x{crc:08x}); the file was made by an incompatible encoder or is corrupt"
            )
            raise DesyncError(msg)

    @staticmethod
    def _check_count(streams: tuple[bytes, ...], n: int) -> None:
        if len(streams) != n:
            msg = f"file has {len(streams)} y streams, the image needs {n}"
            raise FormatError(msg)

    # ------------------------------------------------------------------ interface

    @torch.inference_mode()
    def encode(self, y: Tensor, level: float, timer: Timer = _no_timer) -> tuple[bytes, list[bytes], int]:
        """One image's gained latents (1×M×h×w) → z stream, y streams, index CRC."""
        t = time.perf_counter()
        z_symbols = self.z_symbols(y, level)
        t = timer("hyper", t)
        z_bytes = self.z_coder.encode(z_symbols.numpy(), self.z_indexes(z_symbols.shape))
        t = timer("entropy", t)
        indexes, means = self.hyper_params(z_symbols, level)
        t = timer("hyper", t)
        y_streams, crc = self._encode_y(y, indexes, means, level)
        timer("entropy", t)
        return z_bytes, y_streams, crc

    @torch.inference_mode()
    def decode(self, z: bytes, y: tuple[bytes, ...], level: float, hz: int, wz: int, crc: int,
               timer: Timer = _no_timer) -> Tensor:
        """The streams of one image (z on an hz×wz grid) → y_hat (1×M×4hz×4wz, float32)."""
        t = time.perf_counter()
        z_symbols = torch.from_numpy(self.z_coder.decode(z, self.z_indexes((1, self.N, hz, wz)), "z stream"))[None]
        t = timer("entropy", t)
        indexes, means = self.hyper_params(z_symbols, level)
        t = timer("hyper", t)
        y_hat = self._decode_y(y, indexes, means, level, crc)
        timer("entropy", t)
        return y_hat


class CheckerboardCoder(HyperpriorCoder):
    """Two-pass latent coding with the checkerboard context (see the module docstring).

    Streams: the anchors' row bands, then the other positions' row bands (the same bands).
    The index CRC covers the tables of both passes.
    """

    passes = 2

    def __init__(self, model: CheckerboardModel, device: torch.device) -> None:
        super().__init__(model, device)
        self.context = ExactContext(model)

    @staticmethod
    def anchors(h: int, w: int) -> np.ndarray:
        r, c = np.ogrid[:h, :w]
        return np.broadcast_to(((r + c) % 2 == 0)[None, None], (1, 1, h, w)).copy()

    def context_params(self, indexes: Tensor, means: Tensor, y_hat_anchors: Tensor,
                       level: float, *, inplace: bool = False) -> tuple[Tensor, Tensor]:
        """The table indexes and means of every position after the context pass (exact, tiled).

        Anchors keep the hyperprior's (:class:`~vaecodec.exact.ExactContext` leaves them as given).
        With ``inplace`` the results overwrite ``indexes`` and ``means`` (two latent-sized
        buffers fewer). That is safe tile by tile: only the context convolution reaches past a
        position, and it reads ``y_hat_anchors``, which is not written.
        """
        _, _, h, w = indexes.shape
        out_idx, out_mu = (indexes, means) if inplace else (indexes.clone(), means.clone())
        for (r0, r1, c0, c1), (a0, a1, b0, b1) in tiles(h, w, EXACT_TILE, self.context.radius):
            idx, mu = self.context(indexes[..., a0:a1, b0:b1], means[..., a0:a1, b0:b1],
                                   y_hat_anchors[..., a0:a1, b0:b1], level, parity=(a0 + b0) % 2)
            keep = (..., slice(r0 - a0, r1 - a0), slice(c0 - b0, c1 - b0))
            out_idx[..., r0:r1, c0:c1] = idx[keep].to(torch.uint8)
            out_mu[..., r0:r1, c0:c1] = mu[keep]
        return out_idx, out_mu

    def _band_masks(self, mask: np.ndarray, channels: int) -> list[tuple[slice, np.ndarray]]:
        """Each y band with the positions of ``mask`` in it, broadcast over the channels."""
        h, w = mask.shape[-2:]
        return [(b, np.broadcast_to(mask[..., b, :], (1, channels, *mask[..., b, :].shape[-2:])).copy())
                for b in self._bands(h, w)]

    def y_symbols(self, y: Tensor, indexes: Tensor, means: Tensor, level: float) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`HyperpriorCoder.y_symbols`; the non-anchors' tables and means come from the context pass."""
        sym, idx2, mu2 = self._symbols(y, indexes, means, level, inplace=False)
        return sym.to(torch.int32), idx2, sym + mu2  # the anchors' means in mu2 are the hyperprior's

    def _symbols(self, y: Tensor, indexes: Tensor, means: Tensor, level: float,
                 *, inplace: bool) -> tuple[Tensor, Tensor, Tensor]:
        """The symbols (float, integer-valued) and the table indexes and means of both passes.

        One latent-sized buffer besides the inputs, so that a 50-megapixel encode stays small:
        it holds the decoded anchors (zero elsewhere) for the context pass, then the symbols.
        The context pass leaves the anchors' means as they were, so one formula gives the
        symbols of both passes.
        """
        at = torch.from_numpy(self.anchors(*y.shape[-2:]))
        buf = torch.sub(y, means).round_().add_(means).masked_fill_(~at, 0.0)
        idx2, mu2 = self.context_params(indexes, means, buf, level, inplace=inplace)
        torch.sub(y, mu2, out=buf).round_()
        return buf, idx2, mu2

    def _encode_y(self, y: Tensor, indexes: Tensor, means: Tensor, level: float) -> tuple[list[bytes], int]:
        a = self.anchors(*y.shape[-2:])
        sym, idx2, _ = self._symbols(y, indexes, means, level, inplace=True)  # encode's own buffers
        symbols, idx = sym.numpy(), idx2.numpy()
        streams = [self.y_coder.encode(symbols[..., b, :][m], idx[..., b, :][m])
                   for mask in (a, ~a) for b, m in self._band_masks(mask, self.M)]
        return streams, zlib.crc32(idx.tobytes())

    def _decode_pass(self, streams: tuple[bytes, ...], first: int, idx: np.ndarray, mask: np.ndarray,
                     means: Tensor, y_hat: Tensor) -> None:
        """Decode one pass's bands (streams ``first``...) into ``y_hat`` at ``mask``: symbols + means."""
        for i, (b, m) in enumerate(self._band_masks(mask, self.M)):
            sym = self.y_coder.decode(streams[first + i], idx[..., b, :][m], f"y stream {first + i}")
            mt = torch.from_numpy(m)
            y_hat[..., b, :][mt] = torch.from_numpy(sym).float() + means[..., b, :][mt]

    def _decode_y(self, streams: tuple[bytes, ...], indexes: Tensor, means: Tensor, level: float,
                  crc: int) -> Tensor:
        h, w = indexes.shape[-2:]
        a = self.anchors(h, w)
        n = len(self._bands(h, w))
        self._check_count(streams, 2 * n)
        y_hat = torch.zeros_like(means)  # anchors first, zero elsewhere: the context's input
        self._decode_pass(streams, 0, indexes.numpy(), a, means, y_hat)
        idx2, mu2 = self.context_params(indexes, means, y_hat, level, inplace=True)  # decode's own buffers
        self._check_crc(idx2, crc)
        self._decode_pass(streams, n, idx2.numpy(), ~a, mu2, y_hat)
        return y_hat


def coder_for(model: HyperpriorModel, device: torch.device) -> HyperpriorCoder:
    """The latent coder of ``model``'s architecture."""
    if isinstance(model, CheckerboardModel):
        return CheckerboardCoder(model, device)
    return HyperpriorCoder(model, device)
