"""Noisy/clean training and evaluation pairs for restoration models.

Two sources, both deterministic given their seeds:

- ``sim_pair``: the simulated microscope renders the same field twice, at a low exposure (the
  input) and at ``light_ratio`` times more light with independent noise (the reference, scaled
  back to the input's units). This is the honest "low vs high exposure" pair.
- ``synthetic_clean`` + ``add_camera_noise``: procedural fluorescence structures the nuclei
  simulator does not draw (membrane networks, spots, filaments, textured blobs), blurred by a
  PSF, then Poisson (shot) noise at a random photon budget, camera gain, read noise and offset,
  optionally 8-bit quantised. The reference is the noiseless expectation in the same units.
  This widens the training distribution so the network transfers to real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "NoiseModel",
    "add_camera_noise",
    "random_noise_model",
    "sim_pair",
    "synthetic_clean",
]

_SLIDE_UM = 2000.0


@dataclass(frozen=True)
class NoiseModel:
    """Camera model: ADU = offset + gain * Poisson(photons) + N(0, read); optional 8-bit export."""

    peak_photons: float  # photons at clean intensity 1.0
    background_photons: float
    adu_per_photon: float
    read_noise_adu: float
    offset_adu: float
    eight_bit: bool  # rescale so the clean peak sits near 200 and round to integers in 0..255


def random_noise_model(rng: np.random.Generator) -> NoiseModel:
    return NoiseModel(
        peak_photons=float(math.exp(rng.uniform(math.log(1.5), math.log(300.0)))),
        background_photons=float(rng.uniform(0.0, 1.0) ** 2 * 3.0),
        adu_per_photon=float(math.exp(rng.uniform(math.log(0.5), math.log(30.0)))),
        read_noise_adu=float(rng.uniform(0.0, 1.0) ** 2 * 8.0),
        offset_adu=float(rng.choice([0.0, 0.0, rng.uniform(0.0, 200.0)])),
        eight_bit=bool(rng.random() < 0.4),
    )


def add_camera_noise(
    clean: np.ndarray, noise: NoiseModel, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, reference) float32 in the same ADU units; ``clean`` is >= 0 with peak ~1."""
    expected = clean.astype(np.float64) * noise.peak_photons + noise.background_photons
    photons = rng.poisson(expected)
    noisy = noise.offset_adu + noise.adu_per_photon * photons
    noisy = noisy + rng.normal(0.0, noise.read_noise_adu, clean.shape)
    reference = noise.offset_adu + noise.adu_per_photon * expected
    if noise.eight_bit:  # an 8-bit export: scaled, rounded and clipped like a PNG
        scale = 200.0 / max(float(reference.max()), 1e-6)
        noisy = np.clip(np.rint(noisy * scale), 0, 255)
        reference = reference * scale
    else:
        noisy = np.maximum(np.rint(noisy), 0.0)
    return noisy.astype(np.float32), reference.astype(np.float32)


# --------------------------------------------------------------------------- procedural


def synthetic_clean(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """A noiseless fluorescence-like image (float32, >= 0, 99.9th percentile ~ 1)."""
    from scipy import ndimage as ndi

    kinds = ("membranes", "spots", "filaments", "blobs")
    weights = rng.dirichlet(np.ones(len(kinds)) * 0.6)
    img = np.zeros((size, size), np.float64)
    for kind, wgt in zip(kinds, weights, strict=True):
        if wgt < 0.08:
            continue
        layer = _LAYERS[kind](rng, size)
        img += wgt * layer / max(float(np.percentile(layer, 99.9)), 1e-6)
    # tissue vs empty regions and slow brightness variation
    smooth = ndi.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(8, 30))
    smooth /= smooth.std() + 1e-9
    if rng.random() < 0.6:
        img *= 1.0 / (1.0 + np.exp(-smooth * rng.uniform(1.0, 4.0) - rng.uniform(-1.0, 1.5)))
    img *= np.exp(0.3 * rng.uniform(0, 1) * smooth)
    img = ndi.gaussian_filter(img, rng.uniform(0.5, 1.8))  # PSF
    img += rng.uniform(0.0, 0.08) * (1.0 + 0.5 * np.tanh(smooth))  # out-of-focus haze
    img = np.maximum(img, 0.0)
    return (img / max(float(np.percentile(img, 99.9)), 1e-6)).astype(np.float32)


def _membranes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cell outlines: the edges of a Voronoi tessellation, with per-cell brightness."""
    from scipy.spatial import cKDTree

    cell_px = rng.uniform(8.0, 40.0)
    n = max(4, int((size / cell_px) ** 2))
    pts = rng.uniform(-0.1 * size, 1.1 * size, (n, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    grid = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    # jitter the query points so the outlines wiggle like real membranes
    from scipy import ndimage as ndi

    wob = rng.uniform(0.0, 3.0)
    for axis in range(2):
        grid[:, axis] += wob * ndi.gaussian_filter(rng.standard_normal((size, size)), 4).ravel()
    d, idx = cKDTree(pts).query(grid, k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(size, size)
    width = rng.uniform(0.6, 2.0)
    edge = np.exp(-((gap / width) ** 2))
    bright = rng.uniform(0.3, 1.0, n)[idx[:, 0]].reshape(size, size)
    inside = rng.uniform(0.0, 0.25) * bright
    return edge * bright * rng.uniform(0.6, 1.0, (size, size)) ** 0.5 + inside


def _spots(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy import ndimage as ndi

    img = np.zeros((size, size))
    n = int(rng.integers(5, 400))
    r = rng.integers(0, size, n)
    c = rng.integers(0, size, n)
    np.add.at(img, (r, c), rng.uniform(0.2, 1.0, n))
    return ndi.gaussian_filter(img, rng.uniform(0.6, 2.5))


def _filaments(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy import ndimage as ndi

    img = np.zeros((size, size))
    for _ in range(int(rng.integers(3, 40))):
        steps = int(rng.integers(size // 4, 2 * size))
        turns = rng.normal(0, rng.uniform(0.01, 0.1), steps)
        angle = rng.uniform(0, 2 * math.pi) + np.cumsum(turns)
        y = rng.uniform(0, size) + np.cumsum(np.sin(angle))
        x = rng.uniform(0, size) + np.cumsum(np.cos(angle))
        ok = (y >= 0) & (y < size) & (x >= 0) & (x < size)
        img[y[ok].astype(int), x[ok].astype(int)] = rng.uniform(0.3, 1.0)
    return ndi.gaussian_filter(img, rng.uniform(0.5, 1.5))


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy import ndimage as ndi

    field = ndi.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(3.0, 12.0))
    mask = field > np.percentile(field, rng.uniform(50, 85))
    texture = ndi.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(0.8, 3.0))
    texture = 1.0 + rng.uniform(0.0, 0.6) * texture / (texture.std() + 1e-9)
    return ndi.gaussian_filter(mask.astype(np.float64), 1.0) * np.maximum(texture, 0.0)


_LAYERS = {"membranes": _membranes, "spots": _spots, "filaments": _filaments, "blobs": _blobs}


# --------------------------------------------------------------------------- simulator


def sim_pair(
    seed: int, size: int = 256, light_ratio: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """(low-exposure frame, high-exposure reference in the low frame's ADU units), float32.

    Same slide, stage position and time; the reference gets ``light_ratio`` times the light
    and is rendered with an independent noise seed, then mapped back: offset + (high -
    offset) / light_ratio. A field too bright for that headroom gets a shorter input
    exposure, so the reference never saturates. Low-exposure settings are drawn from
    ``seed`` (varied objectives, binning, defocus and density, short exposures).
    """
    from tasks.hardware.sim import Renderer, SimulatorConfig, build_simulated_core

    from ._training_data import random_settings

    rng = np.random.default_rng([seed, 271828])
    s = random_settings(rng, size)
    s = replace(
        s,
        exposure_ms=float(math.exp(rng.uniform(math.log(0.5), math.log(10.0)))),
        intensity_pct=float(rng.uniform(5.0, 60.0)),
    )
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
    margin = 400.0
    state = replace(
        sim.state(),
        x_um=float(rng.uniform(margin, _SLIDE_UM - margin)),
        y_um=float(rng.uniform(margin, _SLIDE_UM - margin)),
        z_um=cfg.focal_plane_z_um + s.defocus_um,
        objective=s.objective,
        channel="DAPI",
        exposure_ms=s.exposure_ms,
        intensity_pct=s.intensity_pct,
        binning=s.binning,
        illuminated=True,
        t_s=s.t_s,
    )
    offset = cfg.camera_offset_adu
    low, _ = sim.renderer.render(state)
    # the reference must not saturate: when light_ratio x this frame would clip, dim the input
    headroom = 0.7 * (65535.0 - offset) / max(float(low.max()) - offset, 1.0)
    if headroom < light_ratio:
        state = replace(state, exposure_ms=s.exposure_ms * headroom / light_ratio)
        low, _ = sim.renderer.render(state)
    low = low.astype(np.float32)
    high_renderer = Renderer(sim.sample, seed=s.seed + 1_000_003)  # same cells, fresh noise
    high, _ = high_renderer.render(replace(state, exposure_ms=state.exposure_ms * light_ratio))
    if int(high.max()) >= 65535:
        raise RuntimeError(f"sim_pair seed {seed}: the reference saturated; lower light_ratio")
    reference = offset + (high.astype(np.float32) - offset) / light_ratio
    return low, reference.astype(np.float32)
