"""Camera frames from the ground truth: background crop + one noisy sprite per visible cell."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._config import FLUORESCENCE_CHANNELS, SimulatorConfig
from ._noise import BANK_SIDE, PAD, NoiseBank
from ._sample import CellTable, VirtualSample
from ._sprites import (
    MAX_SIGMA_PX,
    NOISE_PATTERNS,
    SpriteCache,
    SpriteKey,
    quantize_sigma,
    quantize_size,
)

__all__ = ["CHANNELS", "Renderer", "ScopeState", "numerical_aperture"]

CHANNELS: tuple[str, ...] = ("BF", *FLUORESCENCE_CHANNELS)
_WAVELENGTH_UM = {"BF": 0.55, "DAPI": 0.46, "GFP": 0.51}
_REF_MAG = 10.0
_SPRITE_PEAK_BOUND = 3.0  # no sprite value exceeds this (textures are ~1 +- 0.6)
_STACK_BOUND = 4  # at most this many cells pile up on one pixel
_SAFE_OFFSET_ADU = 40.0
_CONDENSER_NA = 0.35
_BF_CACHE_ENTRIES = 4000


def numerical_aperture(magnification: float) -> float:
    """Typical dry-objective NA for a magnification: 10x 0.30, 20x 0.47, 40x 0.75."""
    return min(0.95, 0.3 * (magnification / 10.0) ** 0.66)


def _collection_factor(magnification: float) -> float:
    """Epi-fluorescence brightness per pixel ~ NA^4 / M^2, relative to a 10x objective."""

    def f(m: float) -> float:
        return numerical_aperture(m) ** 4 / m**2

    return f(magnification) / f(_REF_MAG)


@dataclass(frozen=True)
class ScopeState:
    """Everything the camera needs to know about the microscope for one exposure."""

    x_um: float
    y_um: float
    z_um: float
    objective: str
    channel: str
    exposure_ms: float
    intensity_pct: float
    binning: int = 1
    illuminated: bool = True
    t_s: float = 0.0


@dataclass(frozen=True)
class _Geometry:
    height: int
    width: int
    pixel_um: float  # incl. binning
    region: tuple[float, float, float, float]  # field of view on the stage, µm


class Renderer:
    """Renders uint16 frames for a :class:`VirtualSample`. Deterministic given the seed."""

    def __init__(self, sample: VirtualSample, seed: int | None = None) -> None:
        self.sample = sample
        self.config: SimulatorConfig = sample.config
        seed = self.config.seed if seed is None else seed
        self._rng = np.random.default_rng([seed, 3])
        self._noise = NoiseBank(seed)
        self._sprites = SpriteCache(sample.shapes, seed)
        self._bf_cache: dict[SpriteKey, np.ndarray] = {}  # ready-to-add brightfield sprites
        self._bf_scale: tuple[float, bool] | None = None

    # ------------------------------------------------------------------ geometry

    def geometry(self, state: ScopeState) -> _Geometry:
        cfg = self.config
        b = int(state.binning)
        h, w = cfg.height // b, cfg.width // b
        px = cfg.pixel_size_um(state.objective, b)
        hx, hy = (w - 1) / 2 * px, (h - 1) / 2 * px
        region = (state.x_um - hx, state.y_um - hy, state.x_um + hx, state.y_um + hy)
        return _Geometry(h, w, px, region)

    def field_of_view(self, state: ScopeState) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in stage µm of the pixel centres of the frame."""
        return self.geometry(state).region

    def stage_to_pixel(
        self, state: ScopeState, x_um: np.ndarray, y_um: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage µm -> (column, row) pixel coordinates, pixel centres at integers."""
        cfg = self.config
        g = self.geometry(state)
        sx = -1.0 if cfg.flip_x else 1.0
        sy = -1.0 if cfg.flip_y else 1.0
        col = sx * (np.asarray(x_um) - state.x_um) / g.pixel_um + (g.width - 1) / 2
        row = sy * (np.asarray(y_um) - state.y_um) / g.pixel_um + (g.height - 1) / 2
        return col, row

    # ------------------------------------------------------------------ photometry

    def _levels(self, state: ScopeState) -> tuple[float, float, float]:
        """(signal e- per unit sprite, background e-, read noise e-) for one pixel."""
        cfg = self.config
        if not state.illuminated or state.intensity_pct <= 0:
            light = 0.0
        else:
            light = state.exposure_ms * state.intensity_pct / 100.0
        b2 = state.binning**2
        mag = cfg.objectives[state.objective]
        if state.channel == "BF":
            background = cfg.background_e_per_ms["BF"] * light * b2
            signal = background
        else:
            coll = _collection_factor(mag) * b2
            background = cfg.background_e_per_ms[state.channel] * light * coll
            signal = cfg.signal_e_per_ms[state.channel] * light * coll
        return signal, background, cfg.read_noise_e * state.binning

    # ------------------------------------------------------------------ rendering

    def render(
        self, state: ScopeState, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, CellTable]:
        """Render one frame into ``out`` (allocated if None).

        Returns the frame and the cells considered for it (those near enough to the field of
        view to show in it; empty when no light reaches the sample).
        """
        cfg = self.config
        g = self.geometry(state)
        if out is None:
            out = np.empty((g.height, g.width), np.uint16)
        elif out.shape != (g.height, g.width):
            raise ValueError(f"out has shape {out.shape}, the frame is {(g.height, g.width)}")
        gain = cfg.camera_gain_e_per_adu
        signal_e, bg_e, read_e = self._levels(state)
        mean = cfg.camera_offset_adu + bg_e / gain
        std = math.sqrt(bg_e + read_e**2) / gain
        field, field_max = self._noise.background(g.height, g.width, mean, std)
        oy, ox = self._rng.integers(0, PAD + 1, 2)
        np.copyto(out, field[oy : oy + g.height, ox : ox + g.width])

        if signal_e <= 0:
            return out, self.sample.cells_at(state.t_s, (0.0, 0.0, -1.0, -1.0))
        na = numerical_aperture(cfg.objectives[state.objective])
        x0, y0, x1, y1 = g.region
        # the cell layer's height under the frame, and floating cells up to ~21 µm above it
        layer_z = float(self.sample.focus_z_um(state.t_s, state.x_um, state.y_um))
        tilt_span = abs(cfg.tilt_x) * (x1 - x0) / 2 + abs(cfg.tilt_y) * (y1 - y0) / 2
        worst_dz = abs(state.z_um - layer_z) + tilt_span + 25.0
        worst_sigma = min(MAX_SIGMA_PX * g.pixel_um, 0.5 * worst_dz * math.tan(math.asin(na)))
        pad_um = self._max_extent_um(state.channel) + 3.0 * worst_sigma + 2 * g.pixel_um
        query = (x0 - pad_um, y0 - pad_um, x1 + pad_um, y1 + pad_um)
        cells = self.sample.cells_at(state.t_s, query)
        if len(cells):
            self._splat(out, state, g, cells, signal_e / gain, gain, field_max)
        return out, cells

    def _max_extent_um(self, channel: str) -> float:
        """Upper bound on how far a cell's sprite reaches from its centre (before blur)."""
        cfg = self.config
        # largest nucleus: radius cap x growth x outline bulge and elongation
        nucleus = cfg.nucleus_radius_um[1] * 1.2 * 1.26 * 1.6
        if channel == "DAPI":
            return nucleus
        return nucleus / 1.6 * cfg.cell_to_nucleus_ratio * 1.15 * 1.13

    def _splat(
        self,
        out: np.ndarray,
        state: ScopeState,
        g: _Geometry,
        cells: CellTable,
        adu_per_unit: float,
        gain: float,
        field_max: int,
    ) -> None:
        cfg = self.config
        ch = state.channel
        px = g.pixel_um
        h, w = out.shape
        na = numerical_aperture(cfg.objectives[state.objective])
        col, row = self.stage_to_pixel(state, cells.x_um, cells.y_um)
        dz = state.z_um - cells.z_um
        psf_um = 0.21 * _WAVELENGTH_UM[ch] / na
        # brightfield blur is set by the (stopped-down) condenser, fluorescence by the objective
        blur_na = min(na, _CONDENSER_NA) if ch == "BF" else na
        blur_um = (0.5 * math.tan(math.asin(blur_na))) * np.abs(dz)
        sigma_px = np.sqrt(blur_um * blur_um + psf_um**2) / px
        # drop cells whose sprite cannot reach the frame before any per-cell work
        reach = self._max_extent_um(ch) / px + 3.0 * np.minimum(sigma_px, MAX_SIGMA_PX) + 2.0
        seen = np.flatnonzero(
            (col + reach >= 0) & (col - reach < w) & (row + reach >= 0) & (row - reach < h)
        )
        n_cells = seen.size
        if not n_cells:
            return
        col, row, dz, sigma_px = col[seen], row[seen], dz[seen], sigma_px[seen]
        if ch == "DAPI":
            cellr: list[int] = [0] * n_cells
            scale = adu_per_unit * cells.brightness_dapi[seen]
        else:
            cellr = quantize_size(cells.cell_radius_um[seen] / px).tolist()
            gfp = cells.brightness_gfp[seen] if ch == "GFP" else np.ones(n_cells)
            scale = adu_per_unit * gfp
        if ch == "BF":
            dsign = np.where(np.abs(dz) < 1.0, 0, np.sign(dz)).astype(np.int64).tolist()
        else:
            dsign = [0] * n_cells
        keys = list(
            zip(
                [ch] * n_cells,
                cells.shape_id[seen].tolist(),
                quantize_size(cells.radius_um[seen] / px).tolist(),
                cellr,
                (cells.phase[seen] == 1).tolist(),
                quantize_sigma(sigma_px).tolist(),
                dsign,
                strict=True,
            )
        )
        orient = cells.orientation[seen].astype(np.int64) ^ (2 * cfg.flip_x + 4 * cfg.flip_y)
        tops = np.rint(row).astype(np.int64).tolist()
        lefts = np.rint(col).astype(np.int64).tolist()

        # Without saturation or a near-zero offset, out + sprite stays inside uint16, so the
        # sprite is rounded to int16 and added modulo 2**16; otherwise sum and clip in float.
        peak = _SPRITE_PEAK_BOUND * float(np.abs(scale).max())
        peak += 8.0 * math.sqrt(peak / gain)
        clip = (
            cfg.camera_offset_adu < _SAFE_OFFSET_ADU
            or field_max + _STACK_BOUND * peak >= 65535
            or peak >= 32767
        )
        if ch == "BF":
            images = self._bf_images(keys, adu_per_unit, clip)
        else:
            images = self._fluorescence_images(keys, scale, gain, clip)
        for img, top, left, o in zip(images, tops, lefts, orient.tolist(), strict=True):
            if o:  # the cell's own orientation, then the camera's mirroring
                if o & 1:
                    img = img.T
                if o & 2:
                    img = img[:, ::-1]
                if o & 4:
                    img = img[::-1]
            n = img.shape[0]
            r0, c0 = top - n // 2, left - n // 2
            if r0 >= h or c0 >= w or r0 + n <= 0 or c0 + n <= 0:
                continue
            if r0 < 0 or c0 < 0 or r0 + n > h or c0 + n > w:
                ra, rb, ca, cb = max(r0, 0), min(r0 + n, h), max(c0, 0), min(c0 + n, w)
                img = img[ra - r0 : rb - r0, ca - c0 : cb - c0]
                target = out[ra:rb, ca:cb]
            else:
                target = out[r0 : r0 + n, c0 : c0 + n]
            if clip:
                img = img + target
                np.maximum(img, 0.0, out=img)
                np.minimum(img, 65535.0, out=img)
                target[...] = img
            else:
                target += img

    def _fluorescence_images(
        self, keys: list[SpriteKey], scale: np.ndarray, gain: float, clip: bool
    ) -> Iterator[np.ndarray]:
        """Each cell's sprite x its signal + 0.5 + fresh shot noise.

        As float32 when the caller clips, else as int16 bits viewed as uint16 (added mod 2**16).
        """
        n = len(keys)
        sd = np.sqrt(np.abs(scale) / gain)
        # coefficients for the sprite rows: (signal, 0.5 for rounding, sd x random unit vector)
        coef = np.empty((n, 2 + NOISE_PATTERNS), np.float32)
        coef[:, 0] = scale
        coef[:, 1] = 0.5
        unit = self._rng.standard_normal((n, NOISE_PATTERNS))
        unit *= (sd / np.sqrt(np.einsum("ij,ij->i", unit, unit)))[:, None]
        coef[:, 2:] = unit
        cached, draw = self._sprites.cached, self._sprites.get
        dot, u16, i16 = np.dot, np.uint16, np.int16
        for key, c, s in zip(keys, coef, sd.tolist(), strict=True):
            rows, hf = cached(key) or draw(key)
            side = 2 * hf + 1
            if rows.shape[0] == 3:  # big sprite: shot noise from the shared bank of normals
                img = dot(c[:2], rows[:2]).reshape(side, side)
                img += (rows[2] * s).reshape(side, side) * self._normal_window(side)
            else:
                img = dot(c, rows).reshape(side, side)
            yield img if clip else img.astype(i16).view(u16)

    def _normal_window(self, side: int) -> np.ndarray:
        if side >= BANK_SIDE:
            return self._rng.standard_normal((side, side), dtype=np.float32)
        r, c = self._rng.integers(0, BANK_SIDE - side, 2)
        return self._noise.normals[r : r + side, c : c + side]

    def _bf_images(
        self, keys: list[SpriteKey], adu_per_unit: float, clip: bool
    ) -> Iterator[np.ndarray]:
        """Brightfield sprites are noiseless and share one scale: cache them ready to add."""
        if self._bf_scale != (adu_per_unit, clip):
            self._bf_scale = (adu_per_unit, clip)
            self._bf_cache.clear()
        cache = self._bf_cache
        coef = np.array([adu_per_unit, 0.5], np.float32)
        for key in keys:
            img = cache.get(key)
            if img is None:
                rows, hf = self._sprites.get(key)
                side = 2 * hf + 1
                img = np.dot(coef, rows).reshape(side, side)
                if not clip:
                    img = img.astype(np.int16).view(np.uint16)
                if len(cache) >= _BF_CACHE_ENTRIES:
                    cache.pop(next(iter(cache)))
                cache[key] = img
            yield img
