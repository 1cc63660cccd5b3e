"""Small real models for the batch-flow tests, loaded by workers through their import path,
e.g. ``"tests.batch_test_models:CountingThreshold"``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["TILE_SEEDS", "CountingThreshold", "blob_image", "run_model_on"]


class CountingThreshold:
    """Pixels above a fixed ``threshold``, 8-connected, labelled.

    ``count_file``: one line is appended per call (so a test counts model calls across worker
    processes). ``die_file``: when it exists, holds N and the count file has N lines, it is
    removed and the worker process exits hard - one real dead worker, as when a node or batch
    job is lost.
    """

    name = "counting-threshold"
    version = "1.0"

    def __init__(
        self, threshold: float = 500.0, count_file: str | None = None, die_file: str | None = None
    ) -> None:
        self.threshold = threshold
        self.count_file = Path(count_file) if count_file else None
        self.die_file = Path(die_file) if die_file else None

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        if self.count_file is not None:
            if self.die_file is not None and self.die_file.exists():
                limit = int(self.die_file.read_text())
                if len(self.count_file.read_text().splitlines()) >= limit:
                    self.die_file.unlink()
                    os._exit(3)
            with open(self.count_file, "a") as f:
                f.write(f"{os.getpid()}\n")
        labels, _ = ndimage.label(image > self.threshold, structure=np.ones((3, 3)))
        return labels.astype(np.int32)


def blob_image(
    shape: tuple[int, ...], centres: list[tuple[float, float]], radius: float, seed: int = 0
) -> np.ndarray:
    """uint16 planes of background ~100 with bright discs (1000) at ``centres`` (every plane)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[-2], 0 : shape[-1]]
    plane = rng.normal(100, 5, shape[-2:])
    for cy, cx in centres:
        plane[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1000
    return np.broadcast_to(plane, shape).clip(0, 4000).astype(np.uint16).copy()


def run_model_on(spec: str, size: int, seeds: list[int]) -> list[int]:
    """Benchmark worker side (``benchmarks/scale.py``): the model, cached per process, on one
    synthetic tile per seed (tiles repeat every ``len(TILE_SEEDS)`` seeds, made once per process).
    Importable by workers, so its caches live in the worker's module, not in a pickled copy."""
    from tasks.inference import load_model

    model = _cache.get(spec) or _cache.setdefault(spec, load_model(spec))
    out = []
    for seed in seeds:
        tile = _tile(size, seed)
        out.append(int(model.segment(tile, pixel_size_um=0.65).max()))
    return out


_cache: dict[str, object] = {}
_tiles: dict[tuple[int, int], np.ndarray] = {}
TILE_SEEDS = tuple(range(8))  # tiles repeat every 8 seeds: made once per process, then cached


def _tile(size: int, seed: int) -> np.ndarray:
    key = (size, TILE_SEEDS[seed % len(TILE_SEEDS)])
    if key not in _tiles:
        rng = np.random.default_rng(key[1])
        centres = [tuple(c) for c in rng.uniform(10, size - 10, (max(1, size * size // 4000), 2))]
        _tiles[key] = blob_image((size, size), centres, radius=7, seed=key[1])
    return _tiles[key]
