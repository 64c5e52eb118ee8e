"""docs/FORMAT.md and vaecodec/container.py agree: files are decoded with the document's tables."""

from __future__ import annotations

import re
import struct
import zlib

import pytest

from conftest import REPO
from vaecodec import container
from vaecodec.container import Header, PixelFormat, VaeFile

DOC = (REPO / "docs" / "FORMAT.md").read_text()
SCALARS = {"u8": ">B", "u16": ">H", "u32": ">I"}


def field_rows() -> list[tuple[str, str]]:
    table = DOC.split("<!-- fields")[1].split("\n\n")[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append((cells[1], cells[2]))
    return rows


def parse_by_document(data: bytes) -> tuple[dict, int]:
    """Walk ``data`` with the field table only; returns the fields and where the CRC starts."""
    env: dict = {}
    pos = 0
    crc_at = -1
    for name, typ in field_rows():
        if name == "crc":
            crc_at = pos
        if typ in SCALARS:
            (env[name],) = struct.unpack_from(SCALARS[typ], data, pos)
            pos += struct.calcsize(SCALARS[typ])
            continue
        m = re.fullmatch(r"(bytes|u32)\[(\w+)\]", typ)
        assert m, f"unknown type {typ!r} in FORMAT.md"
        kind, count = m.groups()
        n = {"L": env.get("model_id_length"), "n": env.get("stream_count"),
             "sum": sum(env.get("stream_lengths", []))}.get(count, None)
        n = int(count) if n is None else n
        if kind == "bytes":
            env[name] = data[pos : pos + n]
            pos += n
        else:
            env[name] = list(struct.unpack_from(f">{n}I", data, pos))
            pos += 4 * n
    assert pos == len(data), "the document's fields must cover the whole file"
    return env, crc_at


@pytest.mark.parametrize(
    ("pf", "icc", "n_y"),
    [(PixelFormat.RGB8, None, 1), (PixelFormat.RGBA8, b"icc!", 3), (PixelFormat.L8, None, 2)],
)
def test_document_decodes_real_files(pf, icc, n_y):
    h = Header(model_id="msh@1", weights_tag=b"\xaa\xbb\xcc\xdd", height=300, width=451, pixel_format=pf,
               quality=42.25, index_crc=0x12345678, has_icc=icc is not None)
    f = VaeFile(h, b"Z" * 7, tuple(bytes([65 + i]) * (i + 3) for i in range(n_y)),
                alpha=b"A" * 5 if pf.has_alpha else None, icc=icc)
    data = container.pack(f)
    env, crc_at = parse_by_document(data)
    assert env["magic"] == container.MAGIC
    assert env["version"] == container.FORMAT_VERSION
    assert env["flags"] == (1 if icc else 0)
    assert env["model_id"].decode() == h.model_id
    assert env["weights_tag"] == h.weights_tag
    assert (env["height"], env["width"]) == (300, 451)
    assert env["pixel_format"] == int(pf)
    assert env["quality"] == 4225
    assert env["index_crc"] == h.index_crc
    assert env["stream_count"] == len(f.streams)
    assert env["stream_lengths"] == [len(s) for s in f.streams]
    assert env["streams"] == b"".join(f.streams)
    assert env["crc"] == zlib.crc32(data[:crc_at])


def test_document_states_the_codes_constants():
    assert container.MAGIC.hex(" ") in DOC.lower()
    assert f"{container.MAX_PIXELS:,}" in DOC
    assert f"1 to {container.MAX_MODEL_ID_BYTES}" in DOC
    for pf in PixelFormat:
        assert f"{int(pf)} = {pf.name}" in DOC
    from vaecodec.codec import Y_CHUNK_SYMBOLS

    assert Y_CHUNK_SYMBOLS == 2**20 and "2^20 // (M · w)" in DOC
    overhead = container.overhead(2, len("msh@1"))
    assert f"spends {overhead} bytes" in DOC
