"""Make tile labels one global label image: offsets per tile, then merge across seams.

Each tile was segmented with a halo, so along every seam both neighbouring tiles segmented the
same band of pixels (``halo`` either side of the seam, see ``_dataset_work.seam_band``). An
object crossing the seam appears in both tiles' bands; two labels whose pixels in the band
overlap with IoU >= ``merge_iou`` are the same object and are merged (union-find over global
ids, so an object spanning several tiles - a corner, a long cell - ends up as one label).
Global ids are then renumbered 1..N in tile order. Only objects with pixels in a tile's core
take part; objects seen only in a halo belong to the neighbour that has them in its core.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.storage import Tile

from ._dataset_work import SIDES, has_neighbour

__all__ = ["global_luts", "seam_pairs"]

OPPOSITE = {"right": "left", "bottom": "top"}


def seam_pairs(tiles: Sequence[Tile], shape: tuple[int, ...]) -> list[tuple[Tile, str, Tile]]:
    """(tile, side, neighbour) for each seam, once: the right and bottom seams of each tile."""
    by_pos = {(t.plane, t.row, t.col): t for t in tiles}
    pairs = []
    for tile in tiles:
        for side, (dr, dc) in (("right", (0, 1)), ("bottom", (1, 0))):
            if has_neighbour(tile, side, shape):
                pairs.append((tile, side, by_pos[tile.plane, tile.row + dr, tile.col + dc]))
    return pairs


def _matches(a: np.ndarray, b: np.ndarray, merge_iou: float) -> np.ndarray:
    """(k, 2) pairs of labels (a's, b's) of the same object in one band."""
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.empty((0, 2), dtype=np.int64)
    pairs, inter = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    area_a = np.bincount(a, minlength=int(a.max()) + 1)
    area_b = np.bincount(b, minlength=int(b.max()) + 1)
    iou = inter / (area_a[pairs[:, 0]] + area_b[pairs[:, 1]] - inter)
    return pairs[iou >= merge_iou]


def _find_roots(parent: np.ndarray) -> np.ndarray:
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def global_luts(
    tiles: Sequence[Tile],
    objects: dict[str, int],
    strips_dir: Path,
    shape: tuple[int, ...],
    merge_iou: float,
) -> tuple[dict[str, np.ndarray], int, int]:
    """Per tile, a lookup table local id -> final id (uint32); the number of objects; and the
    number of seam merges."""
    offsets, total = {}, 0
    for tile in tiles:
        offsets[tile.key] = total
        total += objects[tile.key]
    if total >= 2**32 - 1:
        raise ValueError(f"{total} objects do not fit uint32 labels; segment fewer planes at once")
    parent = np.arange(total + 1, dtype=np.int64)
    merges = 0
    strips: dict[str, dict[str, np.ndarray]] = {}

    def strip(tile: Tile, side: str) -> np.ndarray:
        if tile.key not in strips:
            with np.load(strips_dir / f"{tile.key}.npz") as f:
                strips[tile.key] = {s: f[s] for s in SIDES if s in f}
        return strips[tile.key][side]

    links = []
    for tile, side, other in seam_pairs(tiles, shape):
        pairs = _matches(strip(tile, side), strip(other, OPPOSITE[side]), merge_iou)
        if len(pairs):
            links.append(
                np.stack([pairs[:, 0] + offsets[tile.key], pairs[:, 1] + offsets[other.key]], 1)
            )
    if links:
        edges = np.concatenate(links)
        merges = len(edges)
        for a, b in edges:  # few: one per object crossing a seam
            ra, rb = _root(parent, a), _root(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = _find_roots(parent)
    final = np.zeros(total + 1, dtype=np.uint32)
    uniq, inverse = np.unique(roots[1:], return_inverse=True)
    final[1:] = (inverse + 1).astype(np.uint32)
    luts = {
        tile.key: np.concatenate(
            [[0], final[offsets[tile.key] + 1 : offsets[tile.key] + objects[tile.key] + 1]]
        ).astype(np.uint32)
        for tile in tiles
    }
    return luts, int(uniq.size), merges


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return int(i)
