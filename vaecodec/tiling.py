"""Tiles of a latent grid, for transforms and exact entropy parameters that run piece by piece."""

from __future__ import annotations

Tile = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]


def tiles(h: int, w: int, t: int, m: int) -> list[Tile]:
    """Tiles of a h×w grid: ((r0, r1, c0, c1) kept, (a0, a1, b0, b1) computed with margin ``m``)."""
    out = []
    for r0 in range(0, h, t):
        for c0 in range(0, w, t):
            r1, c1 = min(r0 + t, h), min(c0 + t, w)
            out.append(((r0, r1, c0, c1), (max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m))))
    return out
