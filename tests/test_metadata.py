"""Metadata on purpose: EXIF and ICC profiles are kept, compressed, and the sRGB profile costs a flag."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from conftest import REPO, natural_like
from PIL import Image, ImageCms

from vaecodec import container
from vaecodec.container import FLAG_EXIF, FLAG_ICC, FLAG_ICC_ZLIB, FLAG_SRGB, Header, PixelFormat, VaeFile
from vaecodec.errors import FormatError, LimitError, TruncatedError
from vaecodec.image import SRGB_PROFILE, from_pil, is_srgb

GOLDEN = REPO / "tests" / "data" / "golden"
HEADER = Header(model_id="msh@1", weights_tag=b"\x01\x02\x03\x04", height=64, width=96,
                pixel_format=PixelFormat.RGB8, quality=50.0, index_crc=0x01234567)
OFF_FLAGS = 5


def recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack(">I", zlib.crc32(data[:-4]))


# ---------------------------------------------------------------------------- profiles for the tests

def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def matrix_trc_profile(colorants, curve, *, version: int = 0x02100000, extra_tags=()) -> bytes:
    """A display RGB profile laid out as the HP/Microsoft sRGB IEC61966-2.1 one is: ICC v2, XYZ
    colorants, and a ``curv`` table of 1024 16-bit entries per channel (``curve`` maps [0, 1] to [0, 1])."""
    table = [round(curve(i / 1023) * 65535) for i in range(1024)]
    curv = b"curv\0\0\0\0" + struct.pack(">I1024H", 1024, *table)
    xyz = lambda v: b"XYZ \0\0\0\0" + b"".join(map(_s15, v))
    desc_text = b"test profile\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text + bytes(4 + 4 + 3 + 67)
    tags = [(b"desc", desc), (b"cprt", b"text\0\0\0\0public domain\0"), (b"wtpt", xyz((0.9505, 1.0, 1.0891))),
            (b"rXYZ", xyz(colorants[0])), (b"gXYZ", xyz(colorants[1])), (b"bXYZ", xyz(colorants[2])),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv), *extra_tags]
    offset = 132 + 12 * len(tags)
    body, table_bytes = b"", b""
    placed: dict[bytes, int] = {}
    for sig, data in tags:
        if data not in placed:  # the three channels share one curve, as in HP's profile
            placed[data] = offset + len(body)
            body += data + b"\0" * (-len(data) % 4)
        table_bytes += struct.pack(">4sII", sig, placed[data], len(data))
    size = offset + len(body)
    header = (struct.pack(">I4sI4s4s4s6H4s", size, b"none", version, b"mntr", b"RGB ", b"XYZ ",
                          1998, 2, 9, 6, 49, 0, b"acsp")
              + bytes(28) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table_bytes + body


def srgb_eotf(x: float) -> float:
    return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4


SRGB_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
P3_D50 = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
#: sRGB IEC61966-2.1 as HP/Microsoft's 3,144-byte profile codes it (v2, 1024-entry curves).
HP_LIKE_SRGB = matrix_trc_profile(SRGB_D50, srgb_eotf)
#: Display P3: sRGB's curve, wider primaries. Not sRGB.
DISPLAY_P3 = matrix_trc_profile(P3_D50, srgb_eotf)


def lcms_srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif() -> Image.Exif:
    """An EXIF block as a camera writes one: make, model, date, exposure, and GPS position."""
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 7"  # Model
    exif[0x0132] = "2026:12:04 10:11:12"  # DateTime
    ifd = exif.get_ifd(0x8769)  # Exif IFD
    ifd[0x9003] = "2026:12:04 10:11:12"  # DateTimeOriginal
    ifd[0x829A] = 1 / 250  # ExposureTime
    gps = exif.get_ifd(0x8825)  # GPS IFD
    gps[1], gps[2] = "N", (48.0, 51.0, 29.6)  # latitude
    gps[3], gps[4] = "E", (2.0, 17.0, 40.2)  # longitude
    return exif


def assert_camera_exif(exif: Image.Exif) -> None:
    assert exif[0x010F] == "TestCam" and exif[0x0110] == "Model 7" and exif[0x0132] == "2026:12:04 10:11:12"
    assert exif.get_ifd(0x8769)[0x9003] == "2026:12:04 10:11:12"
    gps = exif.get_ifd(0x8825)
    assert gps[1] == "N" and tuple(float(v) for v in gps[2]) == (48.0, 51.0, 29.6) and gps[3] == "E"


# ---------------------------------------------------------------------------- the container


def sample(**kw) -> VaeFile:
    fields = {"header": HEADER, "z": b"zz", "y": (b"y" * 40,)}
    fields.update(kw)
    return VaeFile(**fields)


def with_header(**kw) -> Header:
    return Header(**{**HEADER.__dict__, **kw})


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*/*.vae")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_files_without_metadata_keep_their_bytes(path):
    """The golden files were written before the metadata streams existed: they parse, have flags 0,
    and the writer reproduces them byte for byte."""
    data = path.read_bytes()
    vf = container.unpack(data)
    assert data[OFF_FLAGS] == 0 and not vf.header.has_icc and not vf.header.has_exif
    assert container.pack(vf) == data


def test_srgb_profile_is_a_flag_that_costs_no_byte():
    plain = container.pack(sample())
    srgb = container.pack(sample(header=with_header(has_icc=True, srgb=True)))
    assert len(srgb) == len(plain)
    assert srgb[OFF_FLAGS] == FLAG_SRGB
    h = container.read_header(srgb)
    assert h.has_icc and h.srgb and not h.icc_stream
    assert container.unpack(srgb).icc is None


def test_other_profiles_are_compressed_and_come_back_byte_exact():
    f = sample(header=with_header(has_icc=True), icc=DISPLAY_P3)
    data = container.pack(f)
    assert data[OFF_FLAGS] == FLAG_ICC | FLAG_ICC_ZLIB
    stored = len(data) - len(container.pack(sample()))
    assert stored < len(DISPLAY_P3), (stored, len(DISPLAY_P3))
    assert container.unpack(data).icc == DISPLAY_P3


def test_an_incompressible_profile_is_stored_raw_as_older_files_store_it():
    icc = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()  # random: zlib cannot shrink it
    data = container.pack(sample(header=with_header(has_icc=True), icc=icc))
    assert data[OFF_FLAGS] == FLAG_ICC
    assert icc in data and container.unpack(data).icc == icc


def test_exif_is_its_own_compressed_stream():
    exif = camera_exif().tobytes()[6:]
    data = container.pack(sample(header=with_header(has_exif=True), exif=exif))
    assert data[OFF_FLAGS] == FLAG_EXIF
    assert exif not in data  # compressed
    vf = container.unpack(data)
    assert vf.exif == exif and vf.header.has_exif and vf.streams[-1] == zlib.compress(exif, 9)


def test_all_metadata_together_round_trips():
    exif = camera_exif().tobytes()[6:]
    f = sample(header=with_header(pixel_format=PixelFormat.RGBA8, has_icc=True, has_exif=True),
               alpha=b"alpha", icc=DISPLAY_P3, exif=exif)
    g = container.unpack(container.pack(f))
    assert (g.alpha, g.icc, g.exif, g.header) == (b"alpha", DISPLAY_P3, exif, f.header)


def test_info_names_the_profile_and_the_exif_block(tmp_path):
    from click.testing import CliRunner

    from vaecodec import cli

    exif = camera_exif().tobytes()[6:]
    files = {
        "srgb.vae": sample(header=with_header(has_icc=True, srgb=True, has_exif=True), exif=exif),
        "p3.vae": sample(header=with_header(has_icc=True), icc=DISPLAY_P3),
        "bare.vae": sample(),
    }
    for name, f in files.items():
        (tmp_path / name).write_bytes(container.pack(f))
    r = CliRunner().invoke(cli.main, ["info", *(str(tmp_path / n) for n in files)])
    assert r.exit_code == 0, r.output
    blocks = [dict(line.strip().split(": ", 1) for line in b.splitlines()[1:]) for b in r.output.strip().split("\n\n")]
    stored_exif, stored_p3 = len(zlib.compress(exif, 9)), len(container.stored_icc(DISPLAY_P3)[0])
    assert blocks[0]["ICC profile"] == "standard sRGB (a flag, no stream)"
    assert blocks[0]["EXIF"] == f"{len(exif)} bytes" and f"exif {stored_exif}" in blocks[0]["streams"]
    assert blocks[1]["ICC profile"] == f"{len(DISPLAY_P3)} bytes" and blocks[1]["EXIF"] == "none"
    assert f"icc {stored_p3}" in blocks[1]["streams"] and stored_p3 < len(DISPLAY_P3)  # as stored
    assert (blocks[2]["ICC profile"], blocks[2]["EXIF"]) == ("none", "none")
    r = CliRunner().invoke(cli.main, ["info", "--json", str(tmp_path / "srgb.vae")])
    rec = json.loads(r.output)
    assert (rec["icc_profile"], rec["exif_bytes"], rec["streams"]["exif"]) == ("sRGB", len(exif), stored_exif)


def _file_with_stream(flags: int, stream: bytes) -> bytes:
    """A valid plain file, then given ``flags`` and one more stream (the CRC recomputed)."""
    vf = sample()
    h = vf.header
    base = container.pack(vf)
    n_streams = len(vf.streams)
    count_at = 7 + len(h.model_id) + 15
    assert base[count_at] == n_streams
    out = bytearray(base[:-4])
    out[OFF_FLAGS] = flags
    out[count_at] = n_streams + 1
    lengths_end = count_at + 1 + 4 * n_streams
    out[lengths_end:lengths_end] = struct.pack(">I", len(stream))
    out += stream
    return recrc(bytes(out + b"\0\0\0\0"))


@pytest.mark.parametrize(
    ("flags", "stream", "error", "match"),
    [
        (FLAG_EXIF, b"not zlib at all", FormatError, "EXIF stream is corrupt"),
        (FLAG_EXIF, zlib.compress(b"MM\0*" * 100)[:-6], TruncatedError, "EXIF stream is truncated"),
        (FLAG_EXIF, zlib.compress(b"MM\0*") + b"junk", FormatError, "unexpected bytes after the EXIF"),
        (FLAG_ICC | FLAG_ICC_ZLIB, b"\x78\xda\xff\xff", FormatError, "ICC profile stream"),
        (FLAG_ICC | FLAG_SRGB, b"profile", FormatError, "both an ICC stream and the sRGB flag"),
        (FLAG_ICC_ZLIB, b"profile", FormatError, "compressed ICC stream but no ICC stream"),
        (0x10, b"x", FormatError, "unknown flags 0x10"),
    ],
)
def test_malformed_metadata_is_a_format_error(flags, stream, error, match):
    with pytest.raises(error, match=match):
        container.unpack(_file_with_stream(flags, stream))


def test_a_metadata_bomb_is_refused_while_inflating(monkeypatch):
    monkeypatch.setattr(container, "MAX_METADATA_BYTES", 1000)
    data = _file_with_stream(FLAG_EXIF, zlib.compress(b"MM\0*" + bytes(5000)))
    with pytest.raises(LimitError, match="inflates to more than 1000 bytes"):
        container.unpack(data)


def test_a_reader_without_the_metadata_flags_refuses_rather_than_misreads(monkeypatch):
    """What a vaecodec that predates flag bits 1-3 does with a file that uses them: it refuses it."""
    data = container.pack(sample(header=with_header(has_icc=True), icc=DISPLAY_P3))
    monkeypatch.setattr(container, "KNOWN_FLAGS", FLAG_ICC)
    with pytest.raises(FormatError, match="unknown flags 0x03"):
        container.unpack(data)


# ---------------------------------------------------------------------------- sRGB recognition


@pytest.mark.parametrize(
    ("name", "profile"), [("lcms", lcms_srgb()), ("hp-like v2", HP_LIKE_SRGB), ("vaecodec", SRGB_PROFILE)]
)
def test_standard_srgb_profiles_are_recognised(name, profile):
    assert is_srgb(profile), name


def test_vaecodecs_srgb_profile_is_srgb_to_a_colour_manager():
    ours = ImageCms.ImageCmsProfile(io.BytesIO(SRGB_PROFILE))
    assert "sRGB" in ImageCms.getProfileDescription(ours)
    a = natural_like(32, 32)
    t = ImageCms.buildTransform(ours, ImageCms.createProfile("sRGB"), "RGB", "RGB")
    assert np.array_equal(np.asarray(ImageCms.applyTransform(Image.fromarray(a), t)), a)


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("display p3", DISPLAY_P3),
        ("gamma 2.2 with sRGB primaries", matrix_trc_profile(SRGB_D50, lambda x: x**2.2)),
        ("sRGB matrix/TRC with a lookup table", matrix_trc_profile(SRGB_D50, srgb_eotf,
                                                                   extra_tags=[(b"A2B0", b"mft2" + bytes(60))])),
        ("lab", ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()),
        ("truncated", lcms_srgb()[:300]),
        ("garbage", bytes(range(256)) * 4),
        ("empty", b""),
    ],
)
def test_other_profiles_are_not_srgb(name, profile):
    assert not is_srgb(profile), name


def test_p3_test_profile_is_a_real_profile():
    """The synthetic profiles above are well-formed: a colour manager reads them and P3 differs from sRGB."""
    a = natural_like(16, 16)

    def to_srgb(profile: bytes) -> np.ndarray:
        t = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"),
                                    "RGB", "RGB")
        return np.asarray(ImageCms.applyTransform(Image.fromarray(a), t)).astype(int)

    assert np.abs(to_srgb(HP_LIKE_SRGB) - a).max() <= 1
    assert np.abs(to_srgb(DISPLAY_P3) - a).max() > 10


# ---------------------------------------------------------------------------- reading images


def test_exif_is_read_from_a_jpeg_with_its_tags(tmp_path):
    path = tmp_path / "cam.jpg"
    Image.fromarray(natural_like(16, 24)).save(path, exif=camera_exif(), quality=95)
    with Image.open(path) as im:
        p = from_pil(im)
    assert p.exif is not None and p.exif[:4] in (b"II*\0", b"MM\0*")
    ex = Image.Exif()
    ex.load(p.exif)
    assert_camera_exif(ex)


def test_orientation_is_applied_and_removed_from_the_kept_exif(tmp_path):
    exif = camera_exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(natural_like(16, 24)).save(path, exif=exif, quality=95)
    with Image.open(path) as im:
        p = from_pil(im)
    assert (p.height, p.width) == (24, 16)
    ex = Image.Exif()
    ex.load(p.exif)
    assert 0x0112 not in ex
    assert_camera_exif(ex)


# ---------------------------------------------------------------------------- through the codec


def photo(icc: bytes | None = None, exif: Image.Exif | None = None, size=(24, 32)) -> Image.Image:
    """A JPEG as a camera or editor writes it (EXIF and/or a profile), opened with Pillow."""
    buf = io.BytesIO()
    kw = {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v is not None}
    Image.fromarray(natural_like(*size)).save(buf, format="JPEG", quality=95, **kw)
    im = Image.open(io.BytesIO(buf.getvalue()))
    im.load()
    return im


def test_exif_and_srgb_are_kept_and_the_profile_costs_no_byte(tiny_codec):
    im = photo(icc=lcms_srgb(), exif=camera_exif())
    kept = tiny_codec.encode(im, quality=50)
    stripped = tiny_codec.encode(im, quality=50, metadata=False)
    vf = container.unpack(kept)
    assert vf.header.srgb and vf.header.has_icc and vf.header.has_exif and vf.icc is None
    assert len(kept) - len(stripped) == len(zlib.compress(vf.exif, 9)) + 4  # EXIF stream + its length; sRGB: 0
    out = tiny_codec.decode(kept, output="pil")
    assert out.info["icc_profile"] == SRGB_PROFILE and is_srgb(out.info["icc_profile"])
    assert_camera_exif(out.getexif())


def test_other_profiles_round_trip_byte_exact_and_compressed(tiny_codec):
    im = photo(icc=DISPLAY_P3)
    with_icc = tiny_codec.encode(im, quality=50)
    without = tiny_codec.encode(im, quality=50, metadata=False)
    assert 0 < len(with_icc) - len(without) < len(DISPLAY_P3)
    assert tiny_codec.decode(with_icc, output="pil").info["icc_profile"] == DISPLAY_P3


def test_metadata_false_writes_what_the_bare_pixels_give(tiny_codec):
    im = photo(icc=DISPLAY_P3, exif=camera_exif())
    stripped = tiny_codec.encode(im, quality=50, metadata=False)
    assert stripped == tiny_codec.encode(np.asarray(im), quality=50)
    assert stripped[OFF_FLAGS] == 0
    out = tiny_codec.decode(stripped, output="pil")
    assert "icc_profile" not in out.info and "exif" not in out.info
    assert tiny_codec.encode_batch([im], quality=50, metadata=False) == [stripped]


def test_target_bpp_counts_metadata_and_says_when_it_alone_is_too_much(tiny_codec):
    exif = camera_exif()
    exif[0x010E] = bytes(np.random.default_rng(1).integers(65, 91, 600, dtype=np.uint8)).decode()  # a long caption
    im = photo(exif=exif, size=(16, 16))
    from vaecodec.errors import VaecodecError

    with pytest.raises(VaecodecError, match=r"metadata alone takes \(EXIF \d+ bytes compressed: [\d.]+ bpp\)") as e:
        tiny_codec.encode(im, target_bpp=4.0)
    assert "metadata=False" in str(e.value) and "--strip" in str(e.value)
    try:  # without the metadata the target is judged on the image alone
        tiny_codec.encode(im, target_bpp=4.0, metadata=False)
    except VaecodecError as e2:
        assert "metadata" not in str(e2)


def test_a_profile_of_another_colour_space_is_not_carried_over_a_conversion(tmp_path):
    """A CMYK JPEG is converted to RGB, so its CMYK profile no longer describes the pixels: dropped."""
    cmyk_profile = bytearray(DISPLAY_P3)
    cmyk_profile[16:20] = b"CMYK"
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(natural_like(16, 16)).convert("CMYK").save(path, icc_profile=bytes(cmyk_profile))
    with Image.open(path) as im:
        assert im.info["icc_profile"] == bytes(cmyk_profile)
        assert from_pil(im).icc is None
    path = tmp_path / "rgb.png"
    Image.fromarray(natural_like(16, 16)).save(path, icc_profile=DISPLAY_P3)
    with Image.open(path) as im:
        assert from_pil(im).icc == DISPLAY_P3
