"""Mutation fuzzer for the whole decode path (container parser → guarded rANS → exact parameters → synthesis).

Every case decodes a mutant of a valid file and must end in one of two ways: a decoded image
of the size its header declares, or a :class:`vaecodec.VaecodecError`. Any other exception,
a crash or a case slower than ``--case-timeout`` seconds is a failure; failing inputs are
written to ``--crashes``.

Mutations (chosen at random per case): bit flips, byte overwrites, truncations, insertions,
extreme header fields (sizes up to the limits, every pixel format, quality, stream count and
lengths), random or spliced streams repacked into a valid container, and, for half of the
cases, a recomputed CRC, since an attacker can do that too and it lets the mutant reach the
entropy decoder.

Short run (part of the test suite): ``tests/test_fuzz.py``. Long run::

    python tests/fuzz.py --cases 100000 --seed 1
"""

from __future__ import annotations

import argparse
import random
import signal
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vaecodec import container  # noqa: E402
from vaecodec.errors import VaecodecError  # noqa: E402


class CaseTimeout(Exception):
    pass


def _alarm(_signum, _frame):  # noqa: ANN001
    raise CaseTimeout


def make_codec(arch: str = "hyperprior"):
    import torch

    from vaecodec.codec import Codec
    from vaecodec.model import HyperpriorModel

    if arch == "checkerboard":
        from conftest import tiny_checkerboard

        return Codec.from_model(tiny_checkerboard(), model_id="tinyc@0", tag=b"tnyc")
    torch.manual_seed(0)
    model = HyperpriorModel(N=16, M=24)
    model.update(force=True)
    return Codec.from_model(model.eval(), model_id="tiny@0", tag=b"tiny")


def seed_files(codec) -> list[bytes]:
    import numpy as np
    from PIL import Image

    from conftest import natural_like

    imgs = [natural_like(1, 1), natural_like(17, 33), natural_like(48, 64, seed=2, channels=1),
            np.dstack([natural_like(20, 40, seed=3), np.full((20, 40), 200, np.uint8)])]
    la = Image.fromarray(natural_like(9, 70, seed=4)).convert("LA")
    files = [codec.encode(im, quality=q) for im in imgs for q in (0, 55, 100)]
    files.append(codec.encode(la, quality=30))
    icc_im = Image.fromarray(natural_like(30, 30, seed=5))
    icc_im.info["icc_profile"] = b"not really a profile, just bytes"
    files.append(codec.encode(icc_im, quality=80))
    return files


def recrc(data: bytes) -> bytes:
    if len(data) < 4:
        return data
    return data[:-4] + struct.pack(">I", zlib.crc32(data[:-4]))


def mutate(rng: random.Random, files: list[bytes]) -> bytes:
    data = bytearray(rng.choice(files))
    kind = rng.randrange(8)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # byte overwrites, biased to the header
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(len(data), 48)) if rng.random() < 0.7 else rng.randrange(len(data))
            data[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    elif kind == 2:  # truncation
        data = data[: rng.randrange(len(data))]
    elif kind == 3:  # insertion
        i = rng.randrange(len(data) + 1)
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 4:  # extreme size fields (offsets for the 6-byte id "tiny@0": height at 17)
        side = rng.choice([1, 2, 63, 64, 65, 1000, 65535, rng.randrange(1, 65536)])
        other = rng.choice([1, 64, 1365, rng.randrange(1, 2000)])
        struct.pack_into(">HH", data, 17, *(side, other) if rng.random() < 0.5 else (other, side))
    elif kind == 5:  # stream count or lengths
        count_at = 28
        if rng.random() < 0.5:
            data[count_at] = rng.choice([0, 1, 2, 3, 5, 255])
        else:
            off = count_at + 1 + 4 * rng.randrange(max(1, data[count_at]))
            if off + 4 <= len(data):
                struct.pack_into(">I", data, off, rng.choice([0, 1, 7, 2**31, 2**32 - 1, rng.randrange(2**16)]))
    else:  # hostile streams inside a valid container
        try:
            vf = container.unpack(bytes(data))
        except VaecodecError:
            return bytes(data)
        streams = [vf.z, *vf.y]
        i = rng.randrange(len(streams))
        if kind == 6:
            n = rng.choice([0, 1, 4, 7, 8, 9, 64, rng.randrange(1, 4096)])
            streams[i] = bytes(rng.choice([0, 0xFF, rng.randrange(256)]) if rng.random() < 0.3
                               else rng.randrange(256) for _ in range(n))
        else:
            donor = container.unpack(rng.choice(files))
            streams[i] = rng.choice([donor.z, *donor.y])
        return container.pack(container.VaeFile(vf.header, streams[0], tuple(streams[1:]) or (b"",),
                                                alpha=vf.alpha, icc=vf.icc))
    data = bytes(data)
    return recrc(data) if rng.random() < 0.5 else data


def run(cases: int, seed: int = 0, case_timeout: float = 60.0, crashes: Path | None = None,
        progress: bool = False, arch: str = "hyperprior") -> dict[str, object]:
    """Run ``cases`` mutants of files of a tiny model of ``arch`` ("hyperprior" or "checkerboard");
    returns counts of outcomes and the failures (empty when all is well)."""
    codec = make_codec(arch)
    files = seed_files(codec)
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    failures: list[tuple[int, str]] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    t0 = time.time()
    slowest = 0.0
    try:
        for case in range(cases):
            data = mutate(rng, files)
            t = time.time()
            signal.setitimer(signal.ITIMER_REAL, case_timeout)
            try:
                out = codec.decode(data)
                h = container.read_header(data)
                if out.shape[:2] != (h.height, h.width):
                    msg = f"decoded {out.shape} for a {h.width}x{h.height} header"
                    raise AssertionError(msg)
                outcomes["decoded"] += 1
            except VaecodecError as e:
                outcomes[type(e).__name__] += 1
            except CaseTimeout:
                failures.append((case, "timeout"))
            except Exception as e:  # noqa: BLE001 - the point is to catch anything else
                failures.append((case, f"{type(e).__name__}: {e}"))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.time() - t)
            if failures and crashes is not None and failures[-1][0] == case:
                crashes.mkdir(parents=True, exist_ok=True)
                (crashes / f"case{case}.vae").write_bytes(data)
            if progress and (case + 1) % 1000 == 0:
                print(f"{case + 1} cases, {len(failures)} failures, {time.time() - t0:.0f} s", file=sys.stderr)
    finally:
        signal.signal(signal.SIGALRM, old)
    return {"cases": cases, "seed": seed, "seconds": round(time.time() - t0, 1), "slowest_case_s": round(slowest, 2),
            "outcomes": dict(outcomes), "failures": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--case-timeout", type=float, default=60.0)
    ap.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    ap.add_argument("--arch", choices=["hyperprior", "checkerboard"], default="hyperprior")
    args = ap.parse_args()
    res = run(args.cases, args.seed, args.case_timeout, args.crashes, progress=True, arch=args.arch)
    import json

    print(json.dumps(res, indent=2))
    sys.exit(1 if res["failures"] else 0)


if __name__ == "__main__":
    main()
