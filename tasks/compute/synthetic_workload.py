"""A synthetic workload for measuring the runners and backends (``benchmarks/scale.py``,
``benchmarks/inference_roundtrip.py``) and for the tests: tiles of bright discs, a model that
does no work, and a worker function that runs a model over tiles.

Workers import these by name (``"tasks.compute.synthetic_workload:ZerosModel"``,
``functools.partial(run_model_on, ...)``), so that their per-process caches live in this
module on the worker, not in a pickled copy; that is why they are not in the benchmark scripts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TILE_SEEDS", "ZerosModel", "blob_image", "run_model_on"]


class ZerosModel:
    """The trivial model of the round-trip benchmark: all background, no work."""

    name = "zeros"
    version = "1.0"
    device = "cpu"

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        return np.zeros(image.shape, dtype=np.int32)


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
