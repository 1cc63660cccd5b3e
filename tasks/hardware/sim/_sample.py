"""The ground truth: cells on a slide that wander, grow, round up, divide and bleach.

Every cell property is a pure function of the seed, the cell's id, its parent's state at the
division and time, except the light dose, which the camera adds. Divisions are processed
globally in time order, so daughter ids are the same whichever regions were looked at, and
in which order.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

from ._config import FLUORESCENCE_CHANNELS, SimulatorConfig
from ._drift import focus_drift_um
from ._photodamage import arrested
from ._plate_layout import WellLayout, well_layout
from ._random import hash_normal, hash_uniform

__all__ = ["CellTable", "Division", "VirtualSample"]

Region = tuple[float, float, float, float]

N_SHAPES = 256  # outlines + textures in the appearance library; each shown in 8 orientations
_K_WANDER = 2  # sinusoids per axis in a cell's trajectory
_BIN_UM = 256.0  # spatial index bin
_SEPARATION_TAU_S = 600.0  # daughters move apart with this time constant
_ROUND_RADIUS = 0.7  # rounded (mitotic) nucleus radius / interphase radius at division
_ROUND_CELL_RATIO = 1.25  # rounded cell body radius / rounded nucleus radius
_FLUOR_INDEX = {name: i for i, name in enumerate(FLUORESCENCE_CHANNELS)}

# streams for the counter-based generator; one per drawn quantity
(
    _S_X,
    _S_Y,
    _S_R,
    _S_SHAPE,
    _S_CYCLE,
    _S_AGE,
    _S_Z,
    _S_FLOAT,
    _S_FLOATZ,
    _S_BDAPI,
    _S_BGFP,
    _S_CLUSTER,
    _S_PARTNER,
    _S_DIR,
    _S_GAP,
    _S_SEP,
    _S_WAMP,
    _S_WPER,
    _S_WPH,
    _S_RATIO,
    _S_ORIENT,
) = range(21)
_S_WELL = 21


@dataclass(frozen=True)
class CellTable:
    """Cells alive at one instant, as parallel arrays (one row per cell). Units: µm, rad."""

    t_s: float
    ids: np.ndarray  # int64, stable over time
    parent_ids: np.ndarray  # int64, -1 for cells seeded at t = 0
    x_um: np.ndarray
    y_um: np.ndarray
    z_um: np.ndarray  # height of the nucleus centre; in focus when stage Z equals it
    radius_um: np.ndarray  # effective nucleus radius sqrt(a * b)
    semi_axes_um: np.ndarray  # (n, 2): nucleus ellipse semi-axes a >= b
    angle_rad: np.ndarray  # angle of axis a from stage +x towards stage +y
    cell_radius_um: np.ndarray  # cytoplasm radius (GFP, brightfield outline)
    phase: np.ndarray  # int8: 0 interphase, 1 rounded up before division
    brightness_dapi: np.ndarray  # relative signal per pixel, after bleaching
    brightness_gfp: np.ndarray
    dose_dapi: np.ndarray  # cumulative light dose, ms at 100 % intensity
    dose_gfp: np.ndarray
    shape_id: np.ndarray  # int32: index into the sample's appearance library
    orientation: np.ndarray  # int8 0-7: bit 0 transpose, bit 1 mirror x, bit 2 mirror y

    def __len__(self) -> int:
        return int(self.ids.size)

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-able list of dicts, one per cell."""
        cols = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "t_s"}
        out: list[dict[str, Any]] = []
        for i in range(len(self)):
            rec: dict[str, Any] = {"t_s": float(self.t_s)}
            for name, arr in cols.items():
                v = arr[i]
                rec[name] = v.tolist() if isinstance(v, np.ndarray) else v.item()
            out.append(rec)
        return out


def _orient_angle(theta: np.ndarray, orient: np.ndarray) -> np.ndarray:
    """Angle of a library shape after the sprite is transposed and/or mirrored."""
    theta = np.where(orient & 1, np.pi / 2 - theta, theta)
    theta = np.where(orient & 2, np.pi - theta, theta)
    theta = np.where(orient & 4, -theta, theta)
    return np.mod(theta, np.pi)


class Division(NamedTuple):
    time_s: float
    parent_id: int
    daughter_ids: tuple[int, int]
    x_um: float
    y_um: float


# float columns of a cell, packed side by side in _Cells.F
_F = {
    name: j
    for j, name in enumerate(
        (
            "birth",
            "div",
            "ax",
            "ay",
            "sep_dir",
            "sep_dist",
            "sep_sign",
            "r0",
            "ratio",
            "dz",
            "angle",
            "sqrt_aspect",
            "bright_dapi",
            "bright_gfp",
            "dose_dapi",
            "dose_gfp",
        )
    )
}
_F_BRIGHT = slice(_F["bright_dapi"], _F["bright_gfp"] + 1)
_F_DOSE = slice(_F["dose_dapi"], _F["dose_gfp"] + 1)


class _Cells:
    """Growable struct-of-arrays holding every cell that ever lived."""

    _SPEC: dict[str, tuple[type, tuple[int, ...]]] = {
        "id": (np.int64, ()),
        "parent": (np.int64, ()),
        # per wave k: frequency, then (amplitude, phase, sin(phase)) for x and for y
        "motion": (np.float64, (_K_WANDER, 7)),
        "shape": (np.int32, ()),
        "orient": (np.int8, ()),
        "divided": (np.bool_, ()),
        "arrested": (np.bool_, ()),  # photodamage stopped it dividing (see _photodamage)
        "F": (np.float64, (len(_F),)),  # the float columns below, packed for one-shot gathers
    }

    def __init__(self) -> None:
        self.n = 0
        self.cap = 0
        self.arrays: dict[str, np.ndarray] = {
            k: np.zeros((0, *shape), dtype) for k, (dtype, shape) in self._SPEC.items()
        }

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays")
        if arrays is None:
            raise AttributeError(name)
        if name in arrays:
            return arrays[name][: self.n]
        if name in _F:
            return arrays["F"][: self.n, _F[name]]
        if name in ("bright", "dose"):
            return arrays["F"][: self.n, _F_BRIGHT if name == "bright" else _F_DOSE]
        raise AttributeError(name)

    def append(self, **cols: np.ndarray) -> None:
        m = len(cols["id"])
        packed = np.empty((m, len(_F)))
        for name, j in _F.items():
            if name not in ("bright_dapi", "bright_gfp", "dose_dapi", "dose_gfp"):
                packed[:, j] = cols.pop(name)
        packed[:, _F_BRIGHT] = cols.pop("bright")
        packed[:, _F_DOSE] = cols.pop("dose")
        cols["F"] = packed
        if self.n + m > self.cap:
            self.cap = max(2 * self.cap, self.n + m, 1024)
            for k, (dtype, shape) in self._SPEC.items():
                grown = np.zeros((self.cap, *shape), dtype)
                grown[: self.n] = self.arrays[k][: self.n]
                self.arrays[k] = grown
        for k in self._SPEC:
            self.arrays[k][self.n : self.n + m] = cols[k]
        self.n += m


class VirtualSample:
    """Ground truth for the simulated slide: cells on it at any time, and their light dose."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = cfg = config or SimulatorConfig()
        self.wells: WellLayout | None = None if cfg.plate is None else well_layout(cfg)
        self._lock = threading.RLock()
        self._cells = _Cells()
        self._divisions: list[Division] = []
        self._next_id = 1
        self._advanced_to = 0.0
        self._next_div = math.inf
        self._index_dirty = True
        self._bin_starts = np.zeros(1, np.int64)
        self._bin_order = np.zeros(0, np.int64)
        self._nbx = max(1, math.ceil(cfg.slide_width_um / _BIN_UM))
        self._nby = max(1, math.ceil(cfg.slide_height_um / _BIN_UM))
        self._margin_um = 0.0
        self.shapes = self._make_shape_library()
        self._seed_founders()
        # perturbations (a drug's biological clock, an optogenetic reporter: _perfusion,
        # _stimulation); by default biology runs on the real clock and nothing is reported
        self.biological_time: Callable[[float], float] = float
        self.real_time: Callable[[float], float] = float
        self.gfp_gain: Callable[[np.ndarray, float], np.ndarray] | None = None

    # --------------------------------------------------------------- construction

    def _u(self, keys: np.ndarray, stream: int) -> np.ndarray:
        return hash_uniform(self.config.seed, keys, stream)

    def _n(self, keys: np.ndarray, stream: int) -> np.ndarray:
        return hash_normal(self.config.seed, keys, stream)

    def _make_shape_library(self) -> dict[str, np.ndarray]:
        """Per-shape appearance: aspect ratio, angle, boundary harmonics, texture seed."""
        k = np.arange(N_SHAPES, dtype=np.int64) + (1 << 40)
        n_harm = 4  # harmonics 2..5 of the nucleus outline
        return {
            "aspect": 1.0 + 0.55 * self._u(k, 1) ** 1.5,
            "angle": np.pi * self._u(k, 2),
            "harm_amp": np.stack(
                [0.07 * self._u(k, 10 + h) / (1 + 0.5 * h) for h in range(n_harm)], axis=1
            ),
            "harm_phase": np.stack([2 * np.pi * self._u(k, 20 + h) for h in range(n_harm)], axis=1),
            "tex_seed": (self._u(k, 3) * 2**31).astype(np.int64),
        }

    def _cycle_length(self, ids: np.ndarray) -> np.ndarray:
        cfg = self.config
        t = cfg.cell_cycle_h * 3600.0
        jitter = np.clip(cfg.cell_cycle_jitter * self._n(ids, _S_CYCLE), -0.5, 0.5)
        return t * (1.0 + jitter)

    def _min_cycle(self) -> float:
        return 0.5 * self.config.cell_cycle_h * 3600.0

    def _wander(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Smooth bounded trajectories: sums of sinusoids with periods 1-6 h, RMS speed v."""
        n = ids.size
        kk = ids[:, None] * _K_WANDER + np.arange(_K_WANDER)
        period = 3600.0 * (1.0 + 5.0 * self._u(kk.ravel(), _S_WPER)).reshape(n, _K_WANDER)
        freq = 2 * np.pi / period
        v_axis = self.config.motility_um_per_min / 60.0 / math.sqrt(2.0)
        k2 = (ids[:, None, None] * 2 + np.arange(2)[:, None]) * _K_WANDER + np.arange(_K_WANDER)
        jitter = 0.7 + 0.6 * self._u(k2.ravel(), _S_WAMP).reshape(n, 2, _K_WANDER)
        amp = v_axis * math.sqrt(2.0 / _K_WANDER) * jitter / freq[:, None, :]
        phase = 2 * np.pi * self._u(k2.ravel(), _S_WPH).reshape(n, 2, _K_WANDER)
        return amp, freq, phase

    def _new_cells(
        self,
        ids: np.ndarray,
        parents: np.ndarray,
        birth: np.ndarray,
        ax: np.ndarray,
        ay: np.ndarray,
        r0: np.ndarray,
        bright: np.ndarray,
        dose: np.ndarray,
        sep_dir: np.ndarray,
        sep_dist: np.ndarray,
        sep_sign: np.ndarray,
    ) -> None:
        cfg = self.config
        amp, freq, phase = self._wander(ids)
        floating = self._u(ids, _S_FLOAT) < cfg.out_of_focus_fraction
        dz = 0.4 * self._n(ids, _S_Z) + floating * (4.0 + 16.0 * self._u(ids, _S_FLOATZ))
        ratio = cfg.cell_to_nucleus_ratio * (0.85 + 0.3 * self._u(ids, _S_RATIO))
        shape = (self._u(ids, _S_SHAPE) * N_SHAPES).astype(np.int32)
        orient = (self._u(ids, _S_ORIENT) * 8).astype(np.int8)
        self._cells.append(
            id=ids,
            parent=parents,
            birth=birth,
            div=birth + self._cycle_length(ids),
            ax=ax,
            ay=ay,
            motion=np.stack(
                [
                    freq,
                    amp[:, 0],
                    phase[:, 0],
                    np.sin(phase[:, 0]),
                    amp[:, 1],
                    phase[:, 1],
                    np.sin(phase[:, 1]),
                ],
                axis=2,
            ),
            sep_dir=sep_dir,
            sep_dist=sep_dist,
            sep_sign=sep_sign,
            r0=r0,
            ratio=ratio,
            shape=shape,
            orient=orient,
            angle=_orient_angle(self.shapes["angle"][shape], orient),
            sqrt_aspect=np.sqrt(self.shapes["aspect"][shape]),
            dz=dz,
            bright=bright,
            dose=dose,
            divided=np.zeros(ids.size, bool),
            arrested=np.zeros(ids.size, bool),
        )
        bound = 2.0 * np.abs(amp).sum(axis=2).max(axis=1) + sep_dist
        self._margin_um = max(self._margin_um, float(bound.max(initial=0.0)))
        first_div = float(self._cells.div[-ids.size :].min(initial=math.inf))
        self._next_div = min(self._next_div, first_div)
        self._index_dirty = True

    def _seed_founders(self) -> None:
        cfg = self.config
        layout = self.wells
        if layout is None:
            area_mm2 = cfg.slide_width_um * cfg.slide_height_um / 1e6
        else:
            area_mm2 = layout.well_area_um2 * len(layout.centres_um) / 1e6
        n = round(cfg.nuclei_per_mm2 * area_mm2)
        ids = np.arange(1, n + 1, dtype=np.int64)
        self._next_id = n + 1
        lo, hi = cfg.nucleus_radius_um
        r0 = lo + (hi - lo) * self._u(ids, _S_R)
        if layout is None:
            x = cfg.slide_width_um * self._u(ids, _S_X)
            y = cfg.slide_height_um * self._u(ids, _S_Y)
        else:
            xy = layout.place(self._u(ids, _S_WELL), self._u(ids, _S_X), self._u(ids, _S_Y))
            x, y = xy[:, 0].copy(), xy[:, 1].copy()
        # clustered cells sit against a free (unclustered) partner, touching or slightly overlapping
        clustered = self._u(ids, _S_CLUSTER) < cfg.cluster_fraction
        free = np.flatnonzero(~clustered)
        if free.size and clustered.any():
            ci = np.flatnonzero(clustered)
            partner = free[(self._u(ids[ci], _S_PARTNER) * free.size).astype(np.int64)]
            ang = 2 * np.pi * self._u(ids[ci], _S_DIR)
            gap = (r0[ci] + r0[partner]) * (0.85 + 0.13 * self._u(ids[ci], _S_GAP))
            x[ci] = np.clip(x[partner] + gap * np.cos(ang), 0, cfg.slide_width_um)
            y[ci] = np.clip(y[partner] + gap * np.sin(ang), 0, cfg.slide_height_um)
        sigma = cfg.brightness_sigma
        bright = np.stack(
            [
                np.exp(sigma["DAPI"] * self._n(ids, _S_BDAPI)),
                np.exp(sigma["GFP"] * self._n(ids, _S_BGFP)),
            ],
            axis=1,
        )
        cycle = self._cycle_length(ids)
        birth = -cycle * self._u(ids, _S_AGE)
        zeros = np.zeros(n)
        self._new_cells(
            ids,
            np.full(n, -1, np.int64),
            birth,
            x,
            y,
            r0,
            bright,
            np.zeros((n, len(FLUORESCENCE_CHANNELS))),
            zeros,
            zeros,
            zeros,
        )

    # --------------------------------------------------------------- dynamics

    def _positions(
        self, idx: np.ndarray, t: float | np.ndarray, f: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions at ``t`` of cells ``idx``; ``f`` is ``F[idx]`` if already gathered."""
        c = self._cells
        f = c.F[idx] if f is None else f
        age = t - f[:, _F["birth"]]
        # one gather, then 1-D rows: numpy is slow on arrays whose inner axis is tiny
        motion = c.motion[idx].reshape(idx.size, _K_WANDER * 7).T
        dx = np.zeros(idx.size)
        dy = np.zeros(idx.size)
        for k in range(_K_WANDER):
            fr, ax, px, sx, ay, py, sy = motion[7 * k : 7 * k + 7]
            wt = fr * age
            # float32 sin is SIMD-fast and accurate to ~1e-4 rad here (nm of displacement)
            dx += ax * (np.sin((wt + px).astype(np.float32)) - sx)
            dy += ay * (np.sin((wt + py).astype(np.float32)) - sy)
        sep = f[:, _F["sep_sign"]] * f[:, _F["sep_dist"]]
        sep *= 1.0 - np.exp(-age / _SEPARATION_TAU_S)
        sd = f[:, _F["sep_dir"]].astype(np.float32)
        return f[:, _F["ax"]] + dx + sep * np.cos(sd), f[:, _F["ay"]] + dy + sep * np.sin(sd)

    def _advance(self, t: float) -> None:
        """Process every division up to time ``t``, strictly in time order."""
        if t <= self._advanced_to and t < self._next_div:
            return
        with self._lock:
            while self._next_div <= t:
                c = self._cells
                # no daughter born in this batch can divide before horizon
                horizon = min(t, self._next_div + self._min_cycle())
                due = np.flatnonzero(~c.divided & ~c.arrested & (c.div <= horizon))
                due = due[np.lexsort((c.id[due], c.div[due]))]
                self._divide(due)
                pending = ~self._cells.divided & ~self._cells.arrested
                self._next_div = float(self._cells.div[pending].min(initial=math.inf))
            self._advanced_to = max(self._advanced_to, t)

    def _divide(self, idx: np.ndarray) -> None:
        if idx.size == 0:
            return
        cfg = self.config
        c = self._cells
        if cfg.photodamage_dose is not None:
            stopped = arrested(c.dose[idx], cfg)
            c.arrays["arrested"][idx[stopped]] = True
            idx = idx[~stopped]
            if idx.size == 0:
                return
        t_div = c.div[idx].copy()
        px, py = self._positions(idx, t_div)
        m = idx.size
        ids = np.arange(self._next_id, self._next_id + 2 * m, dtype=np.int64)
        self._next_id += 2 * m
        d1, d2 = ids[0::2], ids[1::2]
        c.arrays["divided"][idx] = True
        for pid, a, b, tt, x, y in zip(
            c.id[idx].tolist(),
            d1.tolist(),
            d2.tolist(),
            t_div.tolist(),
            px.tolist(),
            py.tolist(),
            strict=True,
        ):
            self._divisions.append(Division(tt, pid, (a, b), x, y))
        lo, hi = cfg.nucleus_radius_um
        both = np.empty(2 * m, np.int64)
        both[0::2], both[1::2] = d1, d2
        rep = np.repeat(np.arange(m), 2)
        parent_r0 = c.r0[idx][rep]
        r0 = np.clip(parent_r0 * np.exp(0.06 * self._n(both, _S_R)), 0.8 * lo, 1.2 * hi)
        bright = c.bright[idx][rep] * np.exp(0.08 * self._n(both, _S_BDAPI))[:, None]
        sep_dir = np.repeat(2 * np.pi * self._u(d1, _S_SEP), 2)
        sign = np.tile([1.0, -1.0], m)
        self._new_cells(
            both,
            c.id[idx][rep],
            t_div[rep],
            px[rep],
            py[rep],
            r0,
            bright,
            c.dose[idx][rep],
            sep_dir,
            1.02 * r0,
            sign,
        )

    # --------------------------------------------------------------- spatial index

    def _rebuild_index(self) -> None:
        c = self._cells
        bx = np.clip((c.ax // _BIN_UM).astype(np.int64), 0, self._nbx - 1)
        by = np.clip((c.ay // _BIN_UM).astype(np.int64), 0, self._nby - 1)
        key = by * self._nbx + bx
        self._bin_order = np.argsort(key, kind="stable")
        n_bins = self._nbx * self._nby
        self._bin_starts = np.searchsorted(key[self._bin_order], np.arange(n_bins + 1))
        self._index_dirty = False

    def _candidates(self, region: Region | None) -> np.ndarray:
        if region is None:
            return np.arange(self._cells.n)
        if self._index_dirty:
            self._rebuild_index()
        m = self._margin_um
        x0, y0, x1, y1 = region
        bx0 = max(0, int((x0 - m) // _BIN_UM))
        bx1 = min(self._nbx - 1, int((x1 + m) // _BIN_UM))
        by0 = max(0, int((y0 - m) // _BIN_UM))
        by1 = min(self._nby - 1, int((y1 + m) // _BIN_UM))
        if bx0 > bx1 or by0 > by1:
            return np.zeros(0, np.int64)
        starts = self._bin_starts
        parts = [
            self._bin_order[starts[by * self._nbx + bx0] : starts[by * self._nbx + bx1 + 1]]
            for by in range(by0, by1 + 1)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _alive_in(
        self, t: float, region: Region | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Store indices, packed float columns and positions of cells alive in ``region``."""
        self._advance(t)
        c = self._cells
        idx = self._candidates(region)
        f = c.F[idx]
        alive = (f[:, _F["birth"]] <= t) & ((f[:, _F["div"]] > t) | c.arrested[idx])
        if region is not None:
            m = self._margin_um
            ax, ay = f[:, _F["ax"]], f[:, _F["ay"]]
            alive &= (ax >= region[0] - m) & (ax <= region[2] + m)
            alive &= (ay >= region[1] - m) & (ay <= region[3] + m)
        idx, f = idx[alive], f[alive]
        x, y = self._positions(idx, t, f)
        if region is not None:
            x0, y0, x1, y1 = region
            keep = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            idx, f, x, y = idx[keep], f[keep], x[keep], y[keep]
        order = np.argsort(idx, kind="stable")  # storage order is id order
        return idx[order], f[order], x[order], y[order]

    # --------------------------------------------------------------- public API

    def cells_at(self, t_s: float, region: Region | None = None) -> CellTable:
        """Cells alive at ``t_s`` whose centre lies in ``region`` = (x0, y0, x1, y1) µm."""
        tau = self.biological_time(t_s)
        with self._lock:
            idx, f, x, y = self._alive_in(tau, region)
            table = self._table(tau, idx, f, x, y)
        if tau != t_s:
            table = replace(table, t_s=float(t_s))
        if self.gfp_gain is not None:
            table = replace(
                table, brightness_gfp=table.brightness_gfp * self.gfp_gain(table.ids, t_s)
            )
        return table

    def _table(
        self, t: float, idx: np.ndarray, f: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> CellTable:
        cfg = self.config
        c = self._cells
        birth, div, r0 = f[:, _F["birth"]], f[:, _F["div"]], f[:, _F["r0"]]
        # an arrested cell rounded up on time, then fell back to interphase at its division
        phase = ((t >= div - cfg.rounding_min * 60.0) & (t < div)).astype(np.int8)
        rounded = phase == 1
        progress = np.clip((t - birth) / (div - birth), 0.0, 1.0)
        growth = np.cbrt((1.0 + progress).astype(np.float32)).astype(np.float64)
        r_inter = r0 * growth
        radius = np.where(rounded, (_ROUND_RADIUS * np.cbrt(2.0)) * r0, r_inter)
        sqrt_aspect = np.where(rounded, 1.0, f[:, _F["sqrt_aspect"]])
        semi = np.stack([radius * sqrt_aspect, radius / sqrt_aspect], axis=1)
        angle = np.where(rounded, 0.0, f[:, _F["angle"]])
        cell_r = radius * np.where(rounded, _ROUND_CELL_RATIO, f[:, _F["ratio"]])
        # DAPI per pixel: DNA content doubles through S phase (30-70 % of the cycle)
        dna = 1.0 + np.clip((progress - 0.3) / 0.4, 0.0, 1.0)
        dapi = f[:, _F["bright_dapi"]] * dna * (r0 / radius) ** 2
        gfp = f[:, _F["bright_gfp"]] * np.where(rounded, 1.7, 1.0)
        dose = f[:, _F_DOSE]
        half = np.array([cfg.bleach_half_dose[ch] for ch in FLUORESCENCE_CHANNELS])
        bleach = np.exp2((-dose / half).astype(np.float32))
        z = f[:, _F["dz"]] + self.focus_z_um(t, x, y)
        return CellTable(
            t_s=float(t),
            ids=c.id[idx],
            parent_ids=c.parent[idx],
            x_um=x,
            y_um=y,
            z_um=z,
            radius_um=radius,
            semi_axes_um=semi,
            angle_rad=angle,
            cell_radius_um=cell_r,
            phase=phase,
            brightness_dapi=dapi * bleach[:, 0],
            brightness_gfp=gfp * bleach[:, 1],
            dose_dapi=dose[:, 0].copy(),
            dose_gfp=dose[:, 1].copy(),
            shape_id=c.shape[idx],
            orientation=c.orient[idx],
        )

    def focus_z_um(
        self, t_s: float, x_um: float | np.ndarray, y_um: float | np.ndarray
    ) -> np.ndarray:
        """Stage Z at which the cell layer at (x, y) is in focus at ``t_s``: the focal plane,
        the slide's tilt and the focus drift (cells sit around it, floating ones above)."""
        cfg = self.config
        z = cfg.focal_plane_z_um + np.zeros(np.shape(x_um))
        if cfg.tilt_x or cfg.tilt_y:
            z = z + cfg.tilt_x * (np.asarray(x_um) - cfg.slide_width_um / 2)
            z = z + cfg.tilt_y * (np.asarray(y_um) - cfg.slide_height_um / 2)
        if cfg.focus_drift is not None:
            z = z + focus_drift_um(cfg.focus_drift, cfg.seed, t_s)
        return z

    def divisions(self, t0_s: float, t1_s: float, region: Region | None = None) -> list[Division]:
        """Divisions with ``t0_s <= time < t1_s`` (located in ``region`` if given)."""
        tau0, tau1 = self.biological_time(t0_s), self.biological_time(t1_s)
        with self._lock:
            self._advance(tau1)
            out = [d for d in self._divisions if tau0 <= d.time_s < tau1]
        if tau0 != t0_s or tau1 != t1_s:
            out = [d._replace(time_s=self.real_time(d.time_s)) for d in out]
        if region is not None:
            x0, y0, x1, y1 = region
            out = [d for d in out if x0 <= d.x_um <= x1 and y0 <= d.y_um <= y1]
        return sorted(out)

    def add_dose(self, region: Region, t_s: float, channel: str, dose: float) -> int:
        """Give ``dose`` (ms at 100 % intensity) of ``channel`` light to cells in ``region``.

        Returns how many cells were hit. Brightfield light does not bleach.
        """
        if channel not in _FLUOR_INDEX or dose <= 0:
            return 0
        with self._lock:
            idx = self._alive_in(self.biological_time(t_s), region)[0]
            self._cells.arrays["F"][idx, _F_DOSE.start + _FLUOR_INDEX[channel]] += dose
            return int(idx.size)

    def add_dose_to(self, ids: np.ndarray, channel: str, dose: float) -> None:
        """Give ``dose`` of ``channel`` light to the cells with these ids (see :meth:`add_dose`)."""
        if channel not in _FLUOR_INDEX or dose <= 0 or len(ids) == 0:
            return
        with self._lock:
            # ids are handed out in storage order, starting at 1
            col = _F_DOSE.start + _FLUOR_INDEX[channel]
            self._cells.arrays["F"][np.asarray(ids) - 1, col] += dose

    @property
    def n_cells_ever(self) -> int:
        """Cells created so far (founders and every daughter of processed divisions)."""
        return self._cells.n
