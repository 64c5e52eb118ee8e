"""The entropy-coding seam: CompressAI's rANS coder, called so that no input can make it misbehave.

CompressAI's ``RansEncoder``/``RansDecoder`` (``compressai.ans``, C++) have no bounds checks:

* the **decoder** reads 32-bit words from the stream for as long as it has symbols to decode,
  past the end of a short or hostile stream;
* the **encoder** writes into a buffer of one 32-bit word per symbol, which escape-coded
  (bypass) outliers can overflow.

:class:`TableCoder` wraps both with guards derived from the coder's source
(``compressai/cpp_exts/rans/rans_interface.cpp``):

* Decoding runs on a copy of the stream followed by zero padding large enough for the most
  the decoder can read past the end. Per symbol it reads at most one renormalisation word,
  plus, for an escape symbol, at most one word per 8 four-bit bypass reads. From padding, the
  state holds at most 16 nibbles of 15, so an escape reads at most 17·15 = 255 nibbles (≤ 33
  words), and ``PAD_PER_SYMBOL`` = 144 bytes covers any symbol. One escape that starts inside
  the real stream can have a bypass count of up to 15 per nibble of stream (2 nibbles per
  byte), hence ``16·len(stream)`` more. Plus 8 bytes read at initialisation.
* After decoding, the symbols are encoded again and must give back exactly the stream: only
  streams this coder produced are accepted, anything else is a :class:`FormatError`.
* Before any encode (including that check), the worst-case size of the output is computed
  from the symbols, and values the coder's buffer could not hold are refused. So are escape
  values of ``MAX_ESCAPE_BITS`` bits or more: the encoder counts their nibbles with a shift
  that would reach 32 bits (undefined in C++; in practice an endless loop).
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError, VaecodecError

PRECISION_BITS = 16  # CompressAI's table precision: a directly coded symbol costs at most 16 bits
BYPASS_BITS = 4
PAD_PER_SYMBOL = 144
PAD_PER_STREAM_BYTE = 16
PAD_FIXED = 4096
MAX_ESCAPE_BITS = 28


class TableCoder:
    """rANS coding of integer symbols, each under one of a set of quantized CDF tables.

    Args:
        quantized_cdf: T×K int32 CDF tables (CompressAI's ``_quantized_cdf``).
        cdf_length: T lengths (``_cdf_length``).
        offset: T offsets (``_offset``): table t codes symbols ``offset[t] .. offset[t] + length[t] - 3``
            directly, and escape-codes anything else.
    """

    def __init__(self, quantized_cdf, cdf_length, offset) -> None:  # noqa: ANN001 (torch tensors)
        from ._compressai import RansDecoder, RansEncoder

        self._encoder, self._decoder = RansEncoder(), RansDecoder()
        self.cdfs = quantized_cdf.int().tolist()
        self.lengths = cdf_length.reshape(-1).int().tolist()
        self.offsets = offset.reshape(-1).int().tolist()
        self._len = np.asarray(self.lengths, dtype=np.int64)
        self._off = np.asarray(self.offsets, dtype=np.int64)
        if not self.cdfs:
            msg = "entropy tables are empty: the model needs update() before coding"
            raise VaecodecError(msg)

    def worst_case_bits(self, symbols: np.ndarray, indexes: np.ndarray) -> int:
        """An upper bound of the encoder's output for these symbols, in bits."""
        v = symbols.astype(np.int64) - self._off[indexes]
        max_value = self._len[indexes] - 2
        escaped = (v < 0) | (v >= max_value)
        raw = np.where(v < 0, -2 * v - 1, 2 * (v - max_value))[escaped]
        n = np.zeros_like(raw)
        r = raw.copy()
        while (r > 0).any():
            n += r > 0
            r >>= BYPASS_BITS
        nibbles = n + n // 15 + 1
        return int(symbols.size * PRECISION_BITS + BYPASS_BITS * nibbles.sum() + 128)

    def _check_capacity(self, symbols: np.ndarray, indexes: np.ndarray) -> bool:
        v = symbols.astype(np.int64) - self._off[indexes]
        limit = 1 << (MAX_ESCAPE_BITS - 1)
        if v.size and (v.min() <= -limit or (v - (self._len[indexes] - 2)).max() >= limit):
            return False
        return self.worst_case_bits(symbols, indexes) <= 32 * symbols.size

    def encode(self, symbols: np.ndarray, indexes: np.ndarray) -> bytes:
        """Encode int symbols (any shape) under the tables ``indexes`` (same shape)."""
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        indexes = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        if not self._check_capacity(symbols, indexes):
            msg = "latent values are too far outside the model's tables to be coded"
            raise VaecodecError(msg)
        return self._encoder.encode_with_indexes(
            symbols.tolist(), indexes.tolist(), self.cdfs, self.lengths, self.offsets
        )

    def decode(self, stream: bytes, indexes: np.ndarray, what: str = "stream") -> np.ndarray:
        """Decode ``indexes.size`` symbols (int32, shaped like ``indexes``); hostile streams raise FormatError."""
        shape = indexes.shape
        idx = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        pad = PAD_FIXED + PAD_PER_SYMBOL * idx.size + PAD_PER_STREAM_BYTE * len(stream)
        padded = bytes(stream) + bytes(pad)
        idx_list = idx.tolist()
        symbols = np.asarray(
            self._decoder.decode_with_indexes(padded, idx_list, self.cdfs, self.lengths, self.offsets),
            dtype=np.int32,
        )
        del padded
        if not self._check_capacity(symbols, idx) or self._encoder.encode_with_indexes(
            symbols.tolist(), idx_list, self.cdfs, self.lengths, self.offsets
        ) != stream:
            msg = f"{what} is corrupt (it is not what the encoder would write for its symbols)"
            raise FormatError(msg)
        return symbols.reshape(shape)
