"""How sharp one frame is: the score a software autofocus maximises over a z sweep.

The measure is the **normalised variance** (Groen, Young & Ligthart 1985, "A comparison of
different focus functions for use in autofocus algorithms"): the grey-level variance divided by
the mean, ``sum((I - mean)^2) / (N * mean)``. Why this one over Brenner's gradient or
Tenengrad (Sobel): in the comparisons of Groen et al. and of Sun, Duthaler & Nelson 2004
("Autofocusing in computer microscopy: selecting the optimal focus algorithm") it is among the
most accurate and the most robust to noise, because it uses no derivative (derivative-based
scores amplify the shot noise of a short, gentle fluorescence exposure); it is unimodal for a
blurred fluorescent sample (blur keeps the photons and spreads them, so the variance falls on
both sides of focus); and dividing by the mean removes a change of brightness between the
frames of a sweep (bleaching, lamp flicker). It costs one pass over the pixels.

``structure`` tells a frame with a sample apart from a blank one: the image's variance over
its pixel-noise variance (estimated robustly from neighbouring-pixel differences, which most
of a sparse fluorescence frame's background dominates), minus one: about 0 when there is only
noise, large when cells are in view, in focus or not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FocusScore", "brenner", "focus_score", "measure_focus_payload", "normalized_variance"]


@dataclass(frozen=True)
class FocusScore:
    """One frame's focus figures. ``sharpness``: normalised variance (larger is sharper);
    ``structure``: image variance over pixel-noise variance, minus 1 (~0: a blank frame);
    ``mean``: mean grey level; ``model_ms``: time to compute, as the live analyzer reports."""

    sharpness: float
    structure: float
    mean: float
    model_ms: float = 0.0
    error: str | None = None


def _plane(pixels: np.ndarray) -> np.ndarray:
    image = np.asarray(pixels)
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"a focus score needs one 2D plane, got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def normalized_variance(pixels: np.ndarray, *, offset: float = 0.0) -> float:
    """Groen et al.'s normalised variance of a 2D image: ``var(I) / mean(I - offset)``.

    ``offset``: the camera's bias (ADU), subtracted from the mean so that the score does not
    depend on it; 0 leaves it in (the location of the maximum of a sweep is the same)."""
    image = _plane(pixels)
    mean = float(image.mean(dtype=np.float64)) - offset
    if mean <= 0:
        return 0.0
    return float(image.var(dtype=np.float64)) / mean


def brenner(pixels: np.ndarray) -> float:
    """Brenner's gradient (squared difference of pixels two apart), normalised by the mean:
    the derivative-based alternative, kept for comparisons (``benchmarks/autofocus.py``)."""
    image = _plane(pixels)
    mean = float(image.mean(dtype=np.float64))
    if mean <= 0:
        return 0.0
    d = image[:, 2:] - image[:, :-2]
    return float(np.mean(d * d, dtype=np.float64)) / mean


def focus_score(pixels: np.ndarray, *, offset: float = 0.0) -> FocusScore:
    """Sharpness (normalised variance) and structure (signal over pixel noise) of one frame."""
    started = time.perf_counter()
    image = _plane(pixels)
    h, w = image.shape
    if h < 8 or w < 8:
        raise ValueError(f"a focus score needs at least 8x8 pixels, got {h}x{w}")
    variance = float(image.var(dtype=np.float64))
    step = max(1, int(np.sqrt(image.size / 250_000)))  # the noise from ~250 k differences
    sub = image[::step, ::step]
    diff = sub[:, 1:] - sub[:, :-1]
    mad = float(np.median(np.abs(diff - np.median(diff))))
    noise_var = (1.4826 * mad) ** 2 / 2.0
    if noise_var <= 0:  # a noiseless image (synthetic): any variance is structure
        noise_var = max(float(np.mean(diff * diff)) / 2.0, 1e-12)
    return FocusScore(
        sharpness=normalized_variance(image, offset=offset),
        structure=variance / noise_var - 1.0,
        mean=float(image.mean(dtype=np.float64)),
        model_ms=(time.perf_counter() - started) * 1e3,
    )


def measure_focus_payload(
    payload: Any, pixel_size_um: float | None = None, region_um: float | None = None
) -> FocusScore:
    """``focus_score`` of a frame payload: pixels, or a reference with ``load()`` (a
    shared-memory frame) read here, on the worker; one that cannot be read gives a score with
    ``error`` set (never a crash of the loop). ``region_um``: score only the centred square of
    that side (the place being focused on, e.g. a target cell, not its neighbours at other
    heights); it needs ``pixel_size_um`` (``QCWorkers`` passes the frame's)."""
    started = time.perf_counter()
    load = getattr(payload, "load", None)
    try:
        pixels = load() if callable(load) else payload
        score = focus_score(centre_crop(pixels, region_um, pixel_size_um))
    except Exception as exc:  # the frame's own fault: reported in its score
        ms = (time.perf_counter() - started) * 1e3
        return FocusScore(0.0, 0.0, 0.0, ms, error=f"{type(exc).__name__}: {exc}")
    return FocusScore(
        score.sharpness, score.structure, score.mean, (time.perf_counter() - started) * 1e3
    )


def centre_crop(
    pixels: np.ndarray, region_um: float | None, pixel_size_um: float | None
) -> np.ndarray:
    """The centred square of side ``region_um`` (at least 16 pixels; the whole frame when
    ``region_um`` is None or covers it)."""
    if region_um is None:
        return pixels
    if pixel_size_um is None or not pixel_size_um > 0:
        raise ValueError(
            f"a focus region of {region_um:g} µm needs the frame's pixel size, got "
            f"{pixel_size_um!r}; score the whole field (region_um: null) or pass the pixel size"
        )
    image = _plane(pixels)
    h, w = image.shape
    side = max(16, round(region_um / pixel_size_um))
    if side >= min(h, w):
        return image
    y0, x0 = (h - side) // 2, (w - side) // 2
    return image[y0 : y0 + side, x0 : x0 + side]
