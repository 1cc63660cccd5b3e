"""Ground-truth instance labels of the nuclei the simulated camera shows.

The labels come from the same nucleus outlines the renderer draws (one outline function), so
a label and the nucleus it marks cannot drift apart; they are what segmentation is trained on
and what tracking is scored against (each label names its cell, whose id is stable over time
and whose parent is known).
"""

from __future__ import annotations

import math

import numpy as np

from ._core import Simulation
from ._render import ScopeState, numerical_aperture
from ._sprites import outline_distance as nucleus_outline_distance
from ._sprites import quantize_size, size_from_bin

__all__ = ["truth_labels"]

_IGNORE_BLUR_RATIO = 0.5  # blur sigma / nucleus radius above which a cell is "ignore"
_PSF_FACTOR = 0.21  # matches the renderer: psf sigma = 0.21 * lambda / NA
_DAPI_WAVELENGTH_UM = 0.46


def truth_labels(sim: Simulation, state: ScopeState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance labels of the nuclei the renderer draws for ``state`` (a ScopeState).

    Returns (labels int32, ignore bool, cell ids of labels 1..N). A pixel covered by several
    nuclei goes to the one it lies deepest inside.
    """
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
