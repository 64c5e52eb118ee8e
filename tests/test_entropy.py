"""The guarded rANS seam: exact round trips, and hostile streams or values never reach undefined behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from vaecodec.entropy import TableCoder
from vaecodec.errors import FormatError, VaecodecError


@pytest.fixture(scope="module")
def coder(tiny_model):
    gc = tiny_model.gaussian_conditional
    return TableCoder(gc._quantized_cdf, gc._cdf_length, gc._offset)


def sample(n: int, seed: int = 0, spread: float = 3.0):
    rng = np.random.default_rng(seed)
    indexes = rng.integers(0, 64, n).astype(np.int32)
    symbols = np.rint(rng.normal(0, spread, n)).astype(np.int32)
    return symbols, indexes


@pytest.mark.parametrize("n", [16, 1000, 20000])
def test_round_trip(coder, n):
    symbols, indexes = sample(n)
    stream = coder.encode(symbols, indexes)
    assert np.array_equal(coder.decode(stream, indexes), symbols)


def test_outliers_use_the_escape_code(coder):
    symbols, indexes = sample(500)
    symbols[::50] = [10_000, -70_000, 3, 123_456, -1, 99, 0, 5000, -5000, 42]
    assert np.array_equal(coder.decode(coder.encode(symbols, indexes), indexes), symbols)


def test_a_single_symbol_is_refused_rather_than_overflowing(coder):
    # CompressAI's encoder flushes 2 words into a 1-word buffer for one symbol
    with pytest.raises(VaecodecError):
        coder.encode(np.zeros(1, np.int32), np.zeros(1, np.int32))


def test_values_the_buffer_cannot_hold_are_refused(coder):
    indexes = np.zeros(64, np.int32)
    symbols = np.full(64, 2**30, np.int32)
    with pytest.raises(VaecodecError, match="too far outside"):
        coder.encode(symbols, indexes)


@pytest.mark.parametrize("value", [2**28, -(2**28), 2**31 - 1, -(2**31)])
def test_escape_values_the_encoder_cannot_count_are_refused(coder, value):
    symbols, indexes = sample(1000)
    symbols[5] = value
    with pytest.raises(VaecodecError, match="too far outside"):
        coder.encode(symbols, indexes)


def test_shape_is_kept(coder):
    symbols, indexes = sample(24 * 5)
    out = coder.decode(coder.encode(symbols, indexes), indexes.reshape(24, 5))
    assert out.shape == (24, 5)


def test_hostile_streams_raise_format_error_only(coder):
    rng = np.random.default_rng(7)
    symbols, indexes = sample(3000, spread=6)
    good = coder.encode(symbols, indexes)
    cases = [b"", b"\x00", b"\xff" * 3, b"\xff" * 64, good[:8], good[: len(good) // 2], good + b"\x00\x00\x00\x00"]
    cases += [bytes(rng.integers(0, 256, int(rng.integers(0, 2 * len(good))), dtype=np.uint8)) for _ in range(200)]
    for _ in range(200):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        cases.append(bytes(b))
    accepted = 0
    for data in cases:
        try:
            out = coder.decode(data, indexes)
        except FormatError as e:
            assert "corrupt" in str(e)
            continue
        # a mutant may happen to be the canonical stream of other symbols: then it must re-encode to itself
        assert coder.encode(out, indexes) == data
        accepted += 1
    assert accepted < len(cases) // 50
