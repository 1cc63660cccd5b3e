"""Training and evaluation pairs from the simulated microscope: DAPI frames + instance labels.

The labels are rasterised from the simulator's ground truth with the very outline the renderer
draws (ellipse with the shape's boundary harmonics, the sprite's size quantisation, orientation
and camera flips, centred on the same rounded pixel), so they align with the rendered nuclei to
the pixel. Cells blurred beyond recognition (far out of focus) are marked in ``ignore`` instead.

>>> frame = simulated_frame(seed=3, size=256)
>>> frame.image.shape, frame.labels.max() > 0
((256, 256), True)
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "STARDIST_DSB_HINT",
    "FrameSettings",
    "SimFrame",
    "load_stardist_dsb_example",
    "random_settings",
    "rasterize_truth",
    "simulated_frame",
    "simulated_frames",
]

_SLIDE_UM = 2000.0  # a small slide: fast to build, still thousands of cells
_IGNORE_BLUR_RATIO = 0.5  # blur sigma / nucleus radius above which a cell is "ignore"
_PSF_FACTOR = 0.21  # matches the renderer: psf sigma = 0.21 * lambda / NA
_DAPI_WAVELENGTH_UM = 0.46


@dataclass(frozen=True)
class FrameSettings:
    """Everything that decides one simulated frame (deterministic given these)."""

    seed: int = 0
    size: int = 256  # frame side in (binned) pixels
    objective: str = "10x"
    binning: int = 1
    exposure_ms: float = 20.0
    intensity_pct: float = 50.0
    defocus_um: float = 0.0
    nuclei_per_mm2: float = 300.0
    cluster_fraction: float = 0.3
    out_of_focus_fraction: float = 0.03
    t_s: float = 0.0
    x_um: float | None = None  # stage position; None: drawn from the seed
    y_um: float | None = None


@dataclass(frozen=True)
class SimFrame:
    """One rendered DAPI frame and its ground truth."""

    image: np.ndarray  # uint16 (size, size)
    labels: np.ndarray  # int32, 0 background, cell k -> k (1..N, in truth-table order)
    ignore: np.ndarray  # bool: pixels of cells too blurred to be segmented (neither class)
    pixel_size_um: float
    settings: FrameSettings
    cell_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # label k-1


def random_settings(rng: np.random.Generator, size: int = 256) -> FrameSettings:
    """Draw varied but realistic acquisition settings (mostly 10x, some binning, low SNR)."""
    objective = str(rng.choice(["10x", "10x", "10x", "20x", "40x"]))
    binning = int(rng.choice([1, 1, 2])) if objective == "10x" else 1
    return FrameSettings(
        seed=int(rng.integers(0, 2**31 - 1)),
        size=size,
        objective=objective,
        binning=binning,
        exposure_ms=float(np.exp(rng.uniform(np.log(2.0), np.log(100.0)))),
        intensity_pct=float(rng.uniform(5.0, 100.0)),
        defocus_um=float(rng.normal(0.0, 1.5 if objective == "10x" else 0.7)),
        nuclei_per_mm2=float(np.exp(rng.uniform(np.log(200.0), np.log(2500.0)))),
        cluster_fraction=float(rng.uniform(0.2, 0.7)),
        out_of_focus_fraction=float(rng.uniform(0.0, 0.08)),
        t_s=float(rng.uniform(0.0, 3600.0 * 20)),
    )


def simulated_frame(seed: int = 0, size: int = 256, **settings: Any) -> SimFrame:
    """Render one frame with ``FrameSettings(seed=seed, size=size, **settings)``."""
    return render_frame(FrameSettings(seed=seed, size=size, **settings))


def simulated_frames(n: int, seed: int = 0, size: int = 256) -> Iterator[SimFrame]:
    """``n`` frames with random settings, deterministic by ``seed``."""
    rng = np.random.default_rng([seed, 7919])
    for _ in range(n):
        yield render_frame(random_settings(rng, size))


def simulated_slide(s: FrameSettings) -> tuple[Any, Any]:
    """(config, simulation): the simulator, time frozen, with a small slide built for ``s``."""
    from tasks.hardware.sim import SimulatorConfig, build_simulated_core

    cfg = SimulatorConfig(
        seed=s.seed,
        width=s.size * s.binning,
        height=s.size * s.binning,
        slide_width_um=_SLIDE_UM,
        slide_height_um=_SLIDE_UM,
        nuclei_per_mm2=s.nuclei_per_mm2,
        cluster_fraction=s.cluster_fraction,
        out_of_focus_fraction=s.out_of_focus_fraction,
        time_scale=0.0,
    )
    _core, sim = build_simulated_core(cfg)
    return cfg, sim


def render_frame(s: FrameSettings) -> SimFrame:
    """Build a small simulated slide for ``s`` and render one DAPI frame plus its labels."""
    cfg, sim = simulated_slide(s)
    rng = np.random.default_rng([s.seed, 104729])
    margin = 400.0
    x = s.x_um if s.x_um is not None else float(rng.uniform(margin, _SLIDE_UM - margin))
    y = s.y_um if s.y_um is not None else float(rng.uniform(margin, _SLIDE_UM - margin))
    state = replace(
        sim.state(),
        x_um=x,
        y_um=y,
        z_um=cfg.focal_plane_z_um + s.defocus_um,
        objective=s.objective,
        channel="DAPI",
        exposure_ms=s.exposure_ms,
        intensity_pct=s.intensity_pct,
        binning=s.binning,
        illuminated=True,
        t_s=s.t_s,
    )
    image, _cells = sim.renderer.render(state)
    labels, ignore, ids = rasterize_truth(sim, state)
    px = cfg.pixel_size_um(s.objective, s.binning)
    return SimFrame(image.copy(), labels, ignore, px, s, ids)


def rasterize_truth(sim: Any, state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance labels of the nuclei the renderer draws for ``state`` (a ScopeState).

    Returns (labels int32, ignore bool, cell ids of labels 1..N). A pixel covered by several
    nuclei goes to the one it lies deepest inside.
    """
    from tasks.hardware.sim import (
        nucleus_outline_distance,
        numerical_aperture,
        quantize_size,
        size_from_bin,
    )

    renderer = sim.renderer
    cfg = renderer.config
    geo = renderer.geometry(state)
    h, w, px = geo.height, geo.width, geo.pixel_um
    x0, y0, x1, y1 = geo.region
    pad = cfg.nucleus_radius_um[1] * 3.0
    cells = sim.sample.cells_at(state.t_s, (x0 - pad, y0 - pad, x1 + pad, y1 + pad))
    labels = np.zeros((h, w), np.int32)
    ignore = np.zeros((h, w), bool)
    if not len(cells):
        return labels, ignore, np.zeros(0, np.int64)
    best = np.full((h, w), np.inf, np.float32)  # signed distance (px) to the winning outline
    col, row = renderer.stage_to_pixel(state, cells.x_um, cells.y_um)
    na = numerical_aperture(cfg.objectives[state.objective])
    blur_um = 0.5 * math.tan(math.asin(na)) * np.abs(state.z_um - cells.z_um)
    psf_um = _PSF_FACTOR * _DAPI_WAVELENGTH_UM / na
    sigma_um = np.sqrt(blur_um**2 + psf_um**2)
    lib = sim.sample.shapes
    flips = 2 * int(cfg.flip_x) + 4 * int(cfg.flip_y)
    r_px = np.array([size_from_bin(int(b)) for b in quantize_size(cells.radius_um / px)])
    r_px = np.maximum(r_px, 1.0)
    ids: list[int] = []
    for i in range(len(cells)):
        rounded = bool(cells.phase[i] == 1)
        sid = int(cells.shape_id[i])
        radius = float(r_px[i])
        aspect = 1.0 if rounded else float(lib["aspect"][sid])
        amps = np.zeros(0) if rounded else lib["harm_amp"][sid]
        extent = radius * math.sqrt(aspect) * (1.0 + float(np.sum(amps)))
        half = math.ceil(extent) + 2
        top, left = int(np.rint(row[i])), int(np.rint(col[i]))
        ra, rb = max(top - half, 0), min(top + half + 1, h)
        ca, cb = max(left - half, 0), min(left + half + 1, w)
        if ra >= rb or ca >= cb:
            continue
        dy, dx = np.mgrid[ra - top : rb - top, ca - left : cb - left].astype(np.float32)
        o = int(cells.orientation[i]) ^ flips
        # undo the renderer's (transpose, mirror x, mirror y) to reach sprite coordinates
        if o & 4:
            dy = -dy
        if o & 2:
            dx = -dx
        if o & 1:
            dy, dx = dx, dy
        dist, _, _ = nucleus_outline_distance(dx, dy, radius, lib, sid, rounded)
        inside = dist < 0.0
        if not inside.any():
            continue
        if sigma_um[i] > _IGNORE_BLUR_RATIO * cells.radius_um[i]:
            ignore[ra:rb, ca:cb] |= inside
            continue
        win_best = best[ra:rb, ca:cb]
        win = inside & (dist < win_best)
        ids.append(int(cells.ids[i]))
        labels[ra:rb, ca:cb][win] = len(ids)
        win_best[win] = dist[win]
    ignore &= labels == 0
    # drop cells that lost all their pixels to neighbours; keep 1..N consecutive
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(ids) + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels], ignore, np.asarray(ids, np.int64)[present - 1]


# --------------------------------------------------------------------------- real images

STARDIST_DSB_HINT = (
    "the real fluorescence test image ships in the stardist wheel (BSD-3-Clause; image and "
    "mask from the 2018 Data Science Bowl, BBBC038): fetch it without installing with "
    "`pip download --no-deps stardist==0.9.2 -d ~/.cache/scopeflow`, or point "
    "SCOPEFLOW_STARDIST=PATH at that wheel or at its stardist/data/images folder"
)
_DSB_FILES = ("stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif")


def load_stardist_dsb_example() -> tuple[np.ndarray, np.ndarray, str]:
    """The 2D nuclei image + instance mask shipped in the ``stardist`` package (not in this repo).

    Looks in ``$SCOPEFLOW_STARDIST`` (a wheel or a folder), an installed ``stardist`` (found
    without importing it), then ``~/.cache/scopeflow/stardist-*.whl``. Returns
    (image uint16, labels int32, where it came from); FileNotFoundError naming the fix if absent.
    """
    import tifffile

    candidates: list[Path] = []
    if env := os.environ.get("SCOPEFLOW_STARDIST"):
        candidates.append(Path(env).expanduser())
    try:
        spec = importlib.util.find_spec("stardist")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" / "images" for p in spec.submodule_search_locations]
    cache = Path(os.environ.get("SCOPEFLOW_CACHE", "~/.cache/scopeflow")).expanduser()
    candidates += sorted(cache.glob("stardist-*.whl"), reverse=True)
    for path in candidates:
        if path.is_file() and path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                if not set(_DSB_FILES) <= set(zf.namelist()):
                    continue
                img, mask = (tifffile.imread(io.BytesIO(zf.read(f))) for f in _DSB_FILES)
        elif path.is_dir() and all((path / Path(f).name).is_file() for f in _DSB_FILES):
            img, mask = (tifffile.imread(path / Path(f).name) for f in _DSB_FILES)
        else:
            continue
        return np.asarray(img), np.asarray(mask).astype(np.int32), str(path)
    raise FileNotFoundError(
        f"no stardist test image found (looked in {[str(c) for c in candidates]}); "
        + STARDIST_DSB_HINT
    )
