"""Progress of long encodes and decodes: ``Codec.encode``/``decode``'s callback and the CLI's bar."""

from __future__ import annotations

import sys

from conftest import natural_like

from vaecodec import cli


def test_encode_reports_tiles_refinement_and_the_quality_search(tiny_codec, monkeypatch):
    import vaecodec.codec as codec_mod

    monkeypatch.setattr(codec_mod, "TILE_LATENTS", 2)  # several tiles on a small image
    img = natural_like(96, 96, seed=2)
    calls: list[tuple[str, int, int]] = []
    data = tiny_codec.encode(img, quality=50, refine=2, progress=lambda *a: calls.append(a))
    analysis = [c for c in calls if c[0] == "analysis"]
    assert len(analysis) > 1 and analysis[-1][1] == analysis[-1][2]  # every tile, to the last
    refine = [c for c in calls if c[0] == "refine"]
    assert refine and refine[-1][1] == refine[-1][2] and [c[1] for c in refine] == sorted(c[1] for c in refine)
    calls.clear()
    out = tiny_codec.decode(data, progress=lambda *a: calls.append(a))
    assert out.shape == img.shape and calls[-1][0] == "synthesis" and calls[-1][1] == calls[-1][2] > 1
    calls.clear()
    bpp = 8 * len(data) / (96 * 96)
    tiny_codec.encode(img, target_bpp=bpp, progress=lambda *a: calls.append(a))
    probes = [c[1] for c in calls if c[0] == "quality search"]
    assert probes[:2] == [1, 2] and all(c[2] == 16 for c in calls if c[0] == "quality search")
    calls.clear()
    tiny_codec.encode(img, quality=50)  # no callback: nothing reported, and no stale one kept
    assert calls == []


def test_cli_bar_only_on_a_terminal(monkeypatch):
    with cli.file_progress("x.png") as progress:
        assert progress is None  # pytest's stderr is not a terminal: no bar, no carriage returns

    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with cli.file_progress("x.png") as progress:
        assert progress is not None
        progress("refine", 1, 4)
        progress("refine", 4, 4)
        progress("quality search", 3, 16)
    # the bar waits a second before it shows, so a quick file prints nothing
    assert "x.png" not in tty.text
    import time

    with cli.file_progress("big.png") as progress:
        progress("synthesis", 1, 8)
        time.sleep(1.1)
        progress("synthesis", 5, 8)  # a slow file: now the bar shows, named after the file
    assert "big.png: synthesis" in tty.text and "5/8" in tty.text
