"""The .vae container: round trips, and every malformed input raises a specific FormatError."""

from __future__ import annotations

import random
import re
import struct
import subprocess
import sys
import zlib

import pytest

from vaecodec import container
from vaecodec.container import Header, PixelFormat, VaeFile
from vaecodec.errors import ChecksumError, FormatError, LimitError, TruncatedError, UnsupportedVersionError

HEADER = Header(model_id="msh@1", weights_tag=b"\x01\x02\x03\x04", height=512, width=768,
                pixel_format=PixelFormat.RGB8, quality=75.5, index_crc=0xDEADBEEF)


def sample(**kw) -> VaeFile:
    fields = {"header": HEADER, "z": b"zzz", "y": (b"y0" * 50, b"y1" * 10)}
    fields.update(kw)
    return VaeFile(**fields)


def recrc(data: bytes) -> bytes:
    """Replace the trailing CRC so a mutation reaches the field checks (an attacker can do this too)."""
    return data[:-4] + struct.pack(">I", zlib.crc32(data[:-4]))


def test_round_trip_keeps_every_field():
    f = sample()
    g = container.unpack(container.pack(f))
    assert g.header == f.header
    assert (g.z, g.y, g.alpha, g.icc) == (f.z, f.y, None, None)


@pytest.mark.parametrize("pf", [PixelFormat.RGBA8, PixelFormat.LA8])
def test_round_trip_with_alpha_and_icc(pf):
    h = Header(**{**HEADER.__dict__, "pixel_format": pf, "has_icc": True})
    f = sample(header=h, alpha=b"alpha-bytes", icc=b"icc-profile")
    g = container.unpack(container.pack(f))
    assert g.header == h and g.alpha == b"alpha-bytes" and g.icc == b"icc-profile" and g.y == f.y


def test_plain_rgb_overhead_is_at_most_40_bytes():
    f = sample(y=(b"y" * 1000,))
    data = container.pack(f)
    assert len(data) - len(f.z) - 1000 <= 40
    assert container.overhead(2, len("msh@1")) == len(data) - len(f.z) - 1000


def test_every_truncation_is_reported_as_truncated_with_the_size_found():
    data = container.pack(sample())
    for n in range(len(data)):  # a cut inside the header, the lengths or the streams
        with pytest.raises(TruncatedError) as e:
            container.unpack(data[:n])
        assert re.search(rf"\b{n}\b", str(e.value)), (n, str(e.value))
    with pytest.raises(TruncatedError, match=r"^empty file \(0 bytes\)$"):
        container.unpack(b"")


def test_any_single_flipped_bit_is_detected():
    data = container.pack(sample())
    for i in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                container.unpack(bytes(bad))


def test_flipped_stream_byte_raises_checksum_error():
    data = bytearray(container.pack(sample()))
    data[-10] ^= 0xFF
    with pytest.raises(ChecksumError, match="CRC"):
        container.unpack(bytes(data))


def test_trailing_bytes_are_refused():
    with pytest.raises(FormatError, match="unexpected bytes"):
        container.unpack(container.pack(sample()) + b"\0")


def test_not_a_vae_file():
    with pytest.raises(FormatError, match="not a .vae file"):
        container.unpack(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert not container.is_vae(b"\x89PNG")
    assert container.is_vae(container.pack(sample())[:4])


# Offsets of the fixed fields for the 5-byte model id "msh@1".
OFF_VERSION, OFF_FLAGS, OFF_IDLEN, OFF_ID = 4, 5, 6, 7
OFF_H, OFF_W, OFF_PF, OFF_Q, OFF_COUNT = 16, 18, 20, 21, 27


def mutate(offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(container.pack(sample()))
    struct.pack_into(fmt, data, offset, value)
    return recrc(bytes(data))


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error", "match"),
    [
        (OFF_VERSION, ">B", 2, UnsupportedVersionError, "version 2"),
        (OFF_VERSION, ">B", 0, UnsupportedVersionError, "version 0"),
        (OFF_FLAGS, ">B", 0x80, FormatError, "flags"),
        (OFF_IDLEN, ">B", 0, FormatError, "model id length"),
        (OFF_IDLEN, ">B", 200, FormatError, "model id length"),
        (OFF_ID, ">B", 0x07, FormatError, "printable"),
        (OFF_H, ">H", 0, LimitError, "outside"),
        (OFF_W, ">H", 0, LimitError, "outside"),
        (OFF_H, ">I", 0xFFFFFFFF, LimitError, "exceeds the limit"),  # height and width both 65535
        (OFF_PF, ">B", 9, FormatError, "pixel format"),
        (OFF_Q, ">H", 10001, FormatError, "quality"),
        (OFF_COUNT, ">B", 1, FormatError, "streams declared"),
        (OFF_COUNT, ">B", 255, TruncatedError, "truncated"),
        (OFF_COUNT + 1, ">I", 0xFFFFFFFF, TruncatedError, "truncated"),
    ],
)
def test_bad_fields_raise_specific_errors(offset, fmt, value, error, match):
    with pytest.raises(error, match=match):
        container.unpack(mutate(offset, fmt, value))


MUTATED = container.pack(sample(header=Header(**{**HEADER.__dict__, "has_icc": True, "has_exif": True}),
                                icc=b"I" * 20, exif=b"MM\0*" + b"E" * 30))
PAYLOAD_START = len(MUTATED) - 4 - sum(len(s) for s in container.unpack(MUTATED).streams)


def mutants(seed: int, n: int = 3000):
    """(bytes, the offsets changed, truncated?) for 1 to 4 random bytes set before the CRC, 30 % also cut."""
    rng = random.Random(seed)
    for _ in range(n):
        bad = bytearray(MUTATED)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad) - 4)] = rng.randrange(256)
        cut = rng.random() < 0.3
        if cut:
            bad = bad[: rng.randrange(len(bad))]
        changed = [i for i, (a, b) in enumerate(zip(bad, MUTATED)) if a != b]
        if changed or cut:
            yield bytes(bad), changed, cut


def test_random_mutations_are_rejected():
    kinds = set()
    for bad, changed, cut in mutants(1234):
        with pytest.raises(FormatError) as e:  # every container error is a FormatError, a VaecodecError
            container.unpack(bad)
        if not cut and min(changed) >= PAYLOAD_START:  # only stream content changed: the CRC must catch it
            assert type(e.value) is ChecksumError, (changed, str(e.value))
        kinds.add(type(e.value))
    assert {ChecksumError, TruncatedError} <= kinds


def test_random_mutations_with_recomputed_crc_are_rejected_or_parse_to_exactly_those_bytes():
    """An attacker can fix the CRC: then each mutant is refused, or it is a well-formed file every byte
    of which the parser accounted for: packing what it parsed gives the same bytes back, except inside
    zlib streams (zlib has several encodings of the same data, e.g. its header's FLEVEL bits), where
    it gives a file that parses to the same content."""
    rejected = accepted = 0
    zlib_flags = container.FLAG_ICC_ZLIB | container.FLAG_EXIF
    for bad, _, _ in mutants(4321):
        bad = recrc(bad) if len(bad) > 4 else bad
        try:
            vf = container.unpack(bad)
        except FormatError:
            rejected += 1
            continue
        assert vf.file_size == len(bad)
        again = container.pack(vf)
        if bad[OFF_FLAGS] & zlib_flags:
            assert container.unpack(again) == VaeFile(**{**vf.__dict__, "file_size": len(again)})
        else:
            assert again == bad
        accepted += 1
    assert rejected > 500 and accepted > 500, (rejected, accepted)


@pytest.mark.parametrize(
    "header",
    [
        Header(**{**HEADER.__dict__, "model_id": ""}),
        Header(**{**HEADER.__dict__, "model_id": "x" * 33}),
        Header(**{**HEADER.__dict__, "model_id": "a b"}),
        Header(**{**HEADER.__dict__, "height": 0}),
        Header(**{**HEADER.__dict__, "width": 70000}),
        Header(**{**HEADER.__dict__, "quality": 100.5}),
        Header(**{**HEADER.__dict__, "weights_tag": b"abc"}),
    ],
)
def test_pack_refuses_fields_out_of_range(header):
    with pytest.raises(FormatError):
        container.pack(sample(header=header))


def test_read_header_matches_unpack():
    data = container.pack(sample())
    assert container.read_header(data) == container.unpack(data).header


def test_container_imports_neither_torch_nor_numpy(tmp_path):
    path = tmp_path / "a.vae"
    path.write_bytes(container.pack(sample()))
    code = (
        "import sys, vaecodec.container, vaecodec;"
        f"h = vaecodec.read_header(sys.argv[1]); assert h.width == {HEADER.width}, h;"
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
