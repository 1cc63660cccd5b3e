"""Per-cell images ("sprites"), drawn once per appearance and blur, then cached.

A sprite lives in stage orientation (axis 0 = stage +y, axis 1 = stage +x) and pixel units of
the current pixel size, so it is shared by every objective that gives the same size in pixels.
Fluorescence sprites hold relative emission (in-focus plateau about 1); brightfield sprites
hold the relative change of transmitted light (negative where the cell absorbs).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "Sprite",
    "SpriteCache",
    "SpriteKey",
    "outline_distance",
    "quantize_sigma",
    "quantize_size",
    "sigma_from_bin",
    "size_from_bin",
]

_TEX = 48  # texture grid side, in nucleus-normalised coordinates spanning [-1.3, 1.3]
_TEX_SPAN = 1.3
_SIGMA_MIN = 0.2
_SIGMA_STEP = math.log(1.06)
MAX_SIGMA_PX = 48.0
_SIZE_STEP = math.log(1.04)
NOISE_PATTERNS = 6
BIG_SPRITE_PX = 128 * 128  # larger sprites keep (image, ones, sqrt(image)) instead
_CHANNEL_CODE = {"BF": 0, "DAPI": 1, "GFP": 2}


def outline_distance(
    dx: np.ndarray,
    dy: np.ndarray,
    radius: float,
    shapes: dict[str, np.ndarray],
    shape_id: int,
    rounded: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate signed distance (px, < 0 inside) from sprite offsets to a nucleus outline.

    The outline is an ellipse of the shape library's aspect and angle with boundary harmonics
    (a round disk while the cell is rounded up). The renderer draws with it and training labels
    are rasterised with it, so the two always agree. Also returns the normalised coordinates
    (u/a, v/b) the texture is sampled at.
    """
    aspect = 1.0 if rounded else float(shapes["aspect"][shape_id])
    theta = 0.0 if rounded else float(shapes["angle"][shape_id])
    a, b = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
    ct, st = math.cos(theta), math.sin(theta)
    un = (dx * ct + dy * st) / a
    vn = (-dx * st + dy * ct) / b
    rho = np.sqrt(un * un + vn * vn)
    boundary = np.ones_like(rho)
    if not rounded:
        phi = np.arctan2(vn, un)
        amps, phases = shapes["harm_amp"][shape_id], shapes["harm_phase"][shape_id]
        for h, (amp, ph) in enumerate(zip(amps.tolist(), phases.tolist(), strict=True)):
            boundary += amp * np.cos((h + 2) * phi + ph)
    return (rho / boundary - 1.0) * radius, un, vn


def quantize_sigma(sigma_px: np.ndarray) -> np.ndarray:
    """Blur sigma (px) -> integer bin; bins are 6 % apart."""
    s = np.clip(sigma_px, _SIGMA_MIN, MAX_SIGMA_PX)
    return np.rint(np.log(s / _SIGMA_MIN) / _SIGMA_STEP).astype(np.int64)


def sigma_from_bin(b: int) -> float:
    return _SIGMA_MIN * math.exp(b * _SIGMA_STEP)


def quantize_size(r_px: np.ndarray) -> np.ndarray:
    """Radius (px) -> integer bin; bins are 4 % apart, so every magnification shares them."""
    return np.rint(np.log(np.maximum(r_px, 1.0)) / _SIZE_STEP).astype(np.int64) + 1


def size_from_bin(b: int) -> float:
    return math.exp((b - 1) * _SIZE_STEP)


# (channel, shape_id, nucleus radius bin, cytoplasm radius bin (0 for DAPI), rounded,
#  sigma bin, defocus sign: brightfield contrast flips through focus, 0 otherwise)
SpriteKey = tuple[str, int, int, int, bool, int, int]


class _Key(NamedTuple):
    channel: str
    shape_id: int
    r_bin: int
    cell_r_bin: int
    rounded: bool
    sigma_bin: int
    defocus_sign: int


class Sprite(NamedTuple):
    """``rows`` (R, side * side) float32: the image, ones, then ``NOISE_PATTERNS`` noise rows.

    A frame's contribution is ``coef @ rows``: coef = (signal, 0.5, sd * a) with ``a`` a random
    unit vector, so the noise is sqrt(image) * N(0, 1) per pixel with exactly the shot-noise
    variance, a fresh combination every frame, and the whole sprite costs one BLAS call.
    Sprites over ``BIG_SPRITE_PX`` hold (image, ones, sqrt(image)) and take their noise from
    a shared bank of normals instead.
    """

    rows: np.ndarray
    half: int  # centre index along both axes; side = 2 * half + 1


class SpriteCache:
    """Bounded sprite cache (oldest entries evicted first) for one sample's appearance library."""

    def __init__(
        self, shapes: dict[str, np.ndarray], seed: int, max_bytes: int = 512 << 20
    ) -> None:
        self._shapes = shapes
        self._seed = seed
        self._max_bytes = max_bytes
        self._bytes = 0
        self._cache: OrderedDict[SpriteKey, Sprite] = OrderedDict()
        self._textures: dict[tuple[int, bool], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, key: SpriteKey) -> Sprite | None:
        """The sprite if it is cached (no LRU bookkeeping: this is the per-cell hot path)."""
        return self._cache.get(key)

    def get(self, key: SpriteKey) -> Sprite:
        cache = self._cache
        sprite = cache.get(key)
        if sprite is None:
            sprite = self._draw(key)
            cache[key] = sprite
            self._bytes += sprite.rows.nbytes
            while self._bytes > self._max_bytes and len(cache) > 1:
                self._bytes -= cache.popitem(last=False)[1].rows.nbytes
        return sprite

    # ------------------------------------------------------------------ drawing

    def _texture(self, shape_id: int, rounded: bool) -> np.ndarray:
        """Chromatin-like texture: smooth mottling, bright foci, dark nucleoli; mean about 1."""
        tex = self._textures.get((shape_id, rounded))
        if tex is not None:
            return tex
        rng = np.random.default_rng([int(self._shapes["tex_seed"][shape_id]), int(rounded)])
        n = _TEX
        if rounded:  # condensed chromosomes: coarse, high-contrast blobs
            field = ndimage.gaussian_filter(rng.standard_normal((n, n)), 2.5)
            field /= field.std() + 1e-9
            tex = 1.0 + 0.55 * np.tanh(field)
        else:
            fine = ndimage.gaussian_filter(rng.standard_normal((n, n)), 1.2)
            coarse = ndimage.gaussian_filter(rng.standard_normal((n, n)), 4.0)
            fine /= fine.std() + 1e-9
            coarse /= coarse.std() + 1e-9
            tex = 1.0 + 0.12 * fine + 0.10 * coarse
            yy, xx = np.mgrid[0:n, 0:n] / (n - 1) * 2 * _TEX_SPAN - _TEX_SPAN
            for _ in range(rng.integers(4, 12)):  # chromocentres
                cy, cx = rng.uniform(-0.75, 0.75, 2)
                tex += 0.35 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.05**2))
            for _ in range(rng.integers(1, 4)):  # nucleoli exclude DNA
                cy, cx = rng.uniform(-0.5, 0.5, 2)
                rad = rng.uniform(0.12, 0.22)
                tex -= 0.45 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rad**2))
        tex = np.clip(tex, 0.15, None).astype(np.float32)
        self._textures[(shape_id, rounded)] = tex
        return tex

    def _outline(
        self, shape_id: int, radius: float, rounded: bool, half: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Soft mask of the nucleus plus its normalised coordinates (u/a, v/b)."""
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        dist_px, un, vn = outline_distance(xx, yy, radius, self._shapes, shape_id, rounded)
        mask = np.clip(0.5 - dist_px, 0.0, 1.0)
        return mask, un, vn

    @staticmethod
    def _disk(radius: float, half: int, aspect: float = 1.0, theta: float = 0.0) -> np.ndarray:
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        ct, st = math.cos(theta), math.sin(theta)
        a, b = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
        rho = np.sqrt(((xx * ct + yy * st) / a) ** 2 + ((-xx * st + yy * ct) / b) ** 2)
        return np.clip(0.5 - (rho - 1.0) * radius, 0.0, 1.0)

    def _draw(self, key: SpriteKey) -> Sprite:
        key = _Key(*key)
        radius = max(size_from_bin(key.r_bin), 1.0)
        cell_r_px = size_from_bin(key.cell_r_bin) if key.cell_r_bin else 0.0
        sigma = sigma_from_bin(key.sigma_bin)
        lib = self._shapes
        if key.rounded:
            nucleus_extent = radius
        else:  # semi-major axis times the largest outline bulge
            bulge = 1.0 + float(lib["harm_amp"][key.shape_id].sum())
            nucleus_extent = radius * math.sqrt(float(lib["aspect"][key.shape_id])) * bulge
        extent = max(nucleus_extent, cell_r_px * 1.13)
        half = math.ceil(extent + 3.0 * sigma + 1.0)
        nuc, un, vn = self._outline(key.shape_id, radius, key.rounded, half)

        if key.channel == "DAPI":
            tex = self._texture(key.shape_id, key.rounded)
            scale = (_TEX - 1) / (2 * _TEX_SPAN)
            coords = np.stack([(vn + _TEX_SPAN) * scale, (un + _TEX_SPAN) * scale])
            tex_px = ndimage.map_coordinates(tex, coords, order=1, mode="nearest")
            dome = 0.85 + 0.15 * np.sqrt(np.clip(1.0 - un * un - vn * vn, 0.0, 1.0))
            img = nuc * dome * tex_px
        else:
            cell_r = max(cell_r_px, radius + 1.0)
            aspect = 1.0 if key.rounded else 1.0 + 0.5 * (float(lib["aspect"][key.shape_id]) - 1)
            theta = float(lib["angle"][key.shape_id]) + 0.4
            body = self._disk(cell_r, half, aspect, theta)
            if key.channel == "GFP":
                img = body * (1.0 - 0.45 * nuc) if not key.rounded else body
            else:  # brightfield: weak absorption, nucleus a bit denser
                img = -(0.05 * body + 0.05 * nuc)

        img = ndimage.gaussian_filter(img.astype(np.float32), sigma, mode="constant", truncate=3.0)
        if key.channel == "BF" and key.defocus_sign != 0:
            # out of focus a phase object shows a halo whose sign flips through focus
            lap = ndimage.laplace(
                ndimage.gaussian_filter(
                    self._disk(max(cell_r_px, radius + 1.0), half), max(sigma, 1.0)
                )
            )
            img += (key.defocus_sign * 1.2 * max(sigma, 1.0)) * lap
        values = img.astype(np.float32).ravel()
        if key.channel == "BF":  # its noise is the background's; the cell changes it < 10 %
            return Sprite(np.stack([values, np.ones_like(values)]), half)
        sqrt_values = np.sqrt(np.clip(values, 0.0, None))
        if values.size > BIG_SPRITE_PX:  # noise patterns would cost too much memory
            return Sprite(np.stack([values, np.ones_like(values), sqrt_values]), half)
        rng = np.random.default_rng(
            [
                self._seed,
                _CHANNEL_CODE[key.channel],
                key.shape_id,
                key.r_bin,
                key.cell_r_bin,
                int(key.rounded),
                key.sigma_bin,
            ]
        )
        rows = np.empty((2 + NOISE_PATTERNS, values.size), np.float32)
        rows[0] = values
        rows[1] = 1.0
        rng.standard_normal(dtype=np.float32, out=rows[2:])
        rows[2:] *= sqrt_values
        return Sprite(rows, half)
