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

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "ConfocalNoise",
    "NoiseModel",
    "add_camera_noise",
    "add_confocal_noise",
    "estimate_noise_gain",
    "random_confocal_noise",
    "random_noise_model",
    "sim_pair",
    "synthetic_clean",
    "tissue_clean",
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


# --------------------------------------------------------------------------- confocal (PMT)


@dataclass(frozen=True)
class ConfocalNoise:
    """Point-scanning confocal exported to 8 bits: offset + PMT pulses, rounded and clipped.

    Each detected photon adds a Gamma(shape, gain / shape) pulse (PMT gain spread), so a pixel
    with mean signal s (ADU above the offset) has variance s * gain * (1 + 1 / shape): the
    8-bit frame is mostly the offset where photons are rare, with a broad tail where a few
    arrived (as in the FMD confocal images).
    """

    peak_adu: float  # clean intensity 1.0 in ADU above the offset
    gain_adu: float  # mean ADU per detected photon
    shape: float  # Gamma shape of the pulse heights (1: exponential)
    offset_adu: float
    read_noise_adu: float

    @property
    def variance_per_adu(self) -> float:
        """Noise variance per ADU of signal (the slope of the mean-variance line)."""
        return self.gain_adu * (1.0 + 1.0 / self.shape)


def random_confocal_noise(
    rng: np.random.Generator, slope: tuple[float, float] = (4.0, 60.0)
) -> ConfocalNoise:
    """A confocal 8-bit noise model whose mean-variance slope is log-uniform in ``slope``."""
    shape = float(rng.uniform(0.7, 4.0))
    target = math.exp(rng.uniform(math.log(slope[0]), math.log(slope[1])))
    return ConfocalNoise(
        peak_adu=float(rng.uniform(80.0, 230.0)),
        gain_adu=target / (1.0 + 1.0 / shape),
        shape=shape,
        offset_adu=float(rng.uniform(0.0, 12.0)),
        read_noise_adu=float(rng.uniform(0.0, 1.5)),
    )


def add_confocal_noise(
    clean: np.ndarray, noise: ConfocalNoise, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy 8-bit frame, noiseless reference) float32; ``clean`` >= 0 with peak ~1."""
    signal = clean.astype(np.float64) * noise.peak_adu
    photons = rng.poisson(signal / noise.gain_adu)
    pulses = np.zeros_like(signal)
    hit = photons > 0
    pulses[hit] = rng.gamma(photons[hit] * noise.shape, noise.gain_adu / noise.shape)
    noisy = noise.offset_adu + pulses + rng.normal(0.0, noise.read_noise_adu, clean.shape)
    noisy = np.clip(np.rint(noisy), 0, 255)
    reference = noise.offset_adu + signal
    return noisy.astype(np.float32), reference.astype(np.float32)


_QUARTILE_BIAS = 1.25


def estimate_noise_gain(noisy: np.ndarray) -> tuple[float, float]:
    """(offset, variance per ADU of signal) of a Poisson-like image, from the image alone.

    The offset is the most frequent value; the slope comes from the classic local mean /
    local variance scatter: pixel noise is measured as the residual against the mean of the
    4 neighbours (variance x 1.25 for independent noise), pooled in intensity bins, and the
    lower quartile of each bin (flat regions, not edges) is fitted through the offset.
    """
    from scipy import ndimage as ndi

    img = np.asarray(noisy, np.float64)
    values, counts = np.unique(np.rint(img), return_counts=True)
    offset = float(values[np.argmax(counts)])
    k = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]])
    resid = img - ndi.convolve(img, k, mode="reflect")
    local_var = ndi.uniform_filter(resid**2, 7) / 1.25
    local_mean = ndi.uniform_filter(img, 7) - offset
    edges = np.percentile(local_mean, np.linspace(50, 99.5, 12))
    xs, ys = [], []
    for a, b in itertools.pairwise(edges):
        sel = (local_mean >= a) & (local_mean < b)
        if sel.sum() > 50 and b > 0:
            xs.append(float(np.median(local_mean[sel])))
            ys.append(float(np.percentile(local_var[sel], 25)))
    x, y = np.asarray(xs), np.asarray(ys)
    slope = float((x * y).sum() / max((x * x).sum(), 1e-12)) if x.size else 1.0
    # the lower quartile of a 7x7 variance sits below its mean: x 1.25, calibrated on
    # add_confocal_noise images of known slope (tests/test_restoration.py checks it)
    return offset, max(_QUARTILE_BIAS * slope, 1e-3)


def tissue_clean(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """Confocal tissue-like field (float32, >= 0, 99.9th percentile ~ 1).

    Packed cells outlined by bright membranes (Voronoi edges, varying width and brightness)
    over dimmer diffuse cytoplasm, inside smooth tissue regions on a dark background, plus
    bright spots, optical-section blur and out-of-focus haze.
    """
    from scipy import ndimage as ndi

    memb = _membranes(rng, size)
    memb /= max(float(np.percentile(memb, 99.9)), 1e-6)
    cyto = ndi.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(2.0, 8.0))
    cyto = np.clip(1.0 + 0.5 * cyto / (cyto.std() + 1e-9), 0.0, None)
    img = memb + rng.uniform(0.02, 0.15) * cyto
    if rng.random() < 0.6:
        spots = _spots(rng, size)
        img += rng.uniform(0.2, 1.2) * spots / max(float(spots.max()), 1e-6)
    field = ndi.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(10, 40))
    field /= field.std() + 1e-9
    tissue = 1.0 / (1.0 + np.exp(-(field - rng.uniform(-1.0, 1.0)) * rng.uniform(2.0, 8.0)))
    img *= tissue * np.exp(0.4 * rng.uniform(0, 1) * ndi.gaussian_filter(field, 5))
    img = ndi.gaussian_filter(img, rng.uniform(0.4, 1.3))
    img += rng.uniform(0.0, 0.06) * (0.3 + tissue)  # haze, brighter over tissue
    img = np.maximum(img, 0.0)
    return (img / max(float(np.percentile(img, 99.9)), 1e-6)).astype(np.float32)


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
    from tasks.hardware.sim import Renderer

    from ._training_data import random_settings, simulated_slide

    rng = np.random.default_rng([seed, 271828])
    s = random_settings(rng, size)
    s = replace(
        s,
        exposure_ms=float(math.exp(rng.uniform(math.log(0.5), math.log(10.0)))),
        intensity_pct=float(rng.uniform(5.0, 60.0)),
    )
    cfg, sim = simulated_slide(s)
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
