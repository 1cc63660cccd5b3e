"""Per-image QC metrics, computed where the pixels are (a Ray/Dask worker, or in-process).

Everything here is one image at a time and stateless; comparing against the run's history and
against neighbouring tiles happens in the flow's process (``QCJudge``, ``TileRegistry``). Costs
are bounded for a 4096² tile: percentiles from a ~1 Mpx subsample, two counting passes
(saturation), a row profile, the cross-correlation of
consecutive lines over the middle 1024 columns, the spectra of nine 256² crops; the rest is
small.

- ``brightness``: median grey; ``contrast``: 90th - 10th percentile; ``saturated``: fraction of
  pixels at full scale or at zero (the larger);
- ``focus``: power of the 0.12-0.25 cycles/px band over the 0.02-0.08 band (configurable),
  the white-noise floor (0.40-0.50 cycles/px) subtracted from both: falls steeply as the
  probe widens and does not depend on gain or dose;
- ``astigmatism``: the 0.06-0.20 cycles/px power in four 45° sectors, largest over smallest
  (1 for a round probe);
- ``snr_db``: signal variance over the white-noise variance of those spectra; ``noise``: the
  white noise's standard deviation (grey levels): shot noise at the run's dose, steadier
  than the SNR, which also follows how much structure a tile holds;
- ``streak_z``: the brightest band along the scan (row means over 256-px segments, against a
  running median of the rows), in robust sigmas: charging;
- ``line_z``: how much better consecutive lines match when shifted sideways by 3-12 px than
  in place (cross-correlation over the middle 1024 columns), in robust sigmas against its
  running median: lost line sync. Shot noise does not correlate between lines; the sample
  does, and a structure running along the lines matches at every shift, so it stays quiet.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft, ndimage

__all__ = ["ImageMetrics", "MetricsRequest", "measure_image", "measure_payload"]

_CROP = 256
_SECTOR_EDGES = (0.06, 0.20)
_NOISE = (0.40, 0.50)


@dataclass(frozen=True)
class MetricsRequest:
    """What to keep besides the per-image metrics: ``border_fraction`` of the tile at each
    edge (the middle ``strip_length`` px of it) for overlap registration,
    ``full_scale``: the detector's saturation value (None: the dtype's maximum)."""

    border_fraction: float = 0.2
    strip_length: int = 1024
    center: int = 512
    thumbnail: int = 256
    full_scale: float | None = None
    # focus: power in ``focus_band`` over ``low_band`` (cycles/px); the default suits SEM/TEM
    # at nm pixels, a smooth light micrograph wants lower bands, e.g. (0.07, 0.18), (0.01, 0.05)
    focus_band: tuple[float, float] = (0.12, 0.25)
    low_band: tuple[float, float] = (0.02, 0.08)


@dataclass(frozen=True)
class ImageMetrics:
    """One image's metrics (``values``), what the flow keeps of its pixels (the middle
    ``strip_length`` px of each edge, ``border_px`` deep, at full resolution; top and bottom
    transposed so every strip runs down its rows with the tile's inside towards higher
    columns on the left strip; a centre crop; a thumbnail), and what it cost (``model_ms``).
    An image that could not be read has ``error`` set and no values."""

    values: dict[str, float]
    shape: tuple[int, ...] = ()
    dtype: str = ""
    strips: dict[str, np.ndarray] = field(default_factory=dict)
    strip_start: tuple[int, int] = (0, 0)  # first row of left/right, first column of top/bottom
    border_px: int = 0
    center: np.ndarray | None = None
    thumbnail: np.ndarray | None = None
    model_ms: float = 0.0
    read_ms: float = 0.0
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.error is None


def measure_payload(payload: Any, request: MetricsRequest | None = None) -> ImageMetrics:
    """Metrics of a frame payload: pixels, or a reference with ``load()`` (a shared-memory
    frame, a file on a share) read here. A reference that cannot be read gives an
    ``ImageMetrics`` with ``error`` (a truncated or corrupt file is a verdict, not a crash)."""
    started = time.perf_counter()
    load = getattr(payload, "load", None)
    if callable(load):
        try:
            pixels = load()
        except Exception as exc:  # the file's own fault: reported as the image's verdict
            ms = (time.perf_counter() - started) * 1e3
            return ImageMetrics({}, model_ms=ms, read_ms=ms, error=f"{type(exc).__name__}: {exc}")
    else:
        pixels = payload
    read_ms = (time.perf_counter() - started) * 1e3
    out = measure_image(pixels, request)
    return ImageMetrics(**{**out.__dict__, "read_ms": read_ms})


def measure_image(pixels: np.ndarray, request: MetricsRequest | None = None) -> ImageMetrics:
    """The QC metrics of one 2D image (a singleton leading axis is dropped; RGB is averaged)."""
    request = request or MetricsRequest()
    started = time.perf_counter()
    image = _as_2d(np.asarray(pixels))
    h, w = image.shape
    if h < 32 or w < 32:
        return ImageMetrics({}, image.shape, str(image.dtype), error=f"image {h}x{w} too small")
    values = _histogram_values(image, request.full_scale)
    values.update(_line_values(image))
    values.update(_spectral_values(image, request.focus_band, request.low_band))
    border = max(8, round(min(h, w) * request.border_fraction))
    ly, lx = min(h, request.strip_length), min(w, request.strip_length)
    ry, rx = (h - ly) // 2, (w - lx) // 2  # the middle of each edge, at full resolution
    strips = {
        "left": np.ascontiguousarray(image[ry : ry + ly, :border]),
        "right": np.ascontiguousarray(image[ry : ry + ly, w - border :]),
        "top": np.ascontiguousarray(image[:border, rx : rx + lx].T),
        "bottom": np.ascontiguousarray(image[h - border :, rx : rx + lx].T),
    }
    c = min(request.center, h, w)
    y0, x0 = (h - c) // 2, (w - c) // 2
    center = np.ascontiguousarray(image[y0 : y0 + c, x0 : x0 + c])
    t = max(1, math.ceil(max(h, w) / request.thumbnail))
    thumbnail = np.ascontiguousarray(image[::t, ::t])
    return ImageMetrics(
        values=values,
        shape=image.shape,
        dtype=str(image.dtype),
        strips=strips,
        strip_start=(ry, rx),
        border_px=border,
        center=center,
        thumbnail=thumbnail,
        model_ms=(time.perf_counter() - started) * 1e3,
    )


def _as_2d(image: np.ndarray) -> np.ndarray:
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3].mean(axis=-1)
    if image.ndim != 2:
        raise ValueError(f"QC needs a 2D image (or a single plane), got shape {image.shape}")
    return image


def _histogram_values(image: np.ndarray, full_scale: float | None) -> dict[str, float]:
    if image.dtype in (np.uint8, np.uint16):
        top = int(full_scale) if full_scale is not None else int(np.iinfo(image.dtype).max)
        step = max(1, int(math.sqrt(image.size / 1_000_000)))  # percentiles from ~1 Mpx
        sample = image[::step, ::step]
        hist = np.bincount(sample.ravel(), minlength=top + 1)
        cdf = np.cumsum(hist) / sample.size
        p10, p50, p90 = (int(np.searchsorted(cdf, q)) for q in (0.1, 0.5, 0.9))
        high = np.count_nonzero(image >= top) / image.size  # exact: a few saturated pixels count
        low = np.count_nonzero(image == 0) / image.size
    else:
        sample = image[::4, ::4].astype(np.float64)
        p10, p50, p90 = np.percentile(sample, (10, 50, 90))
        top = full_scale if full_scale is not None else float(sample.max())
        high = float((image >= top).mean()) if full_scale is not None else 0.0
        low = 0.0
    return {
        "brightness": float(p50),
        "contrast": float(p90 - p10),
        "saturated": float(max(high, low)),
    }


def _robust_z(series: np.ndarray, size: int) -> np.ndarray:
    """``series`` against its running median, in robust sigmas (1.4826 MAD) of the residual."""
    size = min(size, series.shape[0] | 1)
    baseline = ndimage.median_filter(
        series, size=(size,) + (1,) * (series.ndim - 1), mode="nearest"
    )
    residual = series - baseline
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return residual / max(1.4826 * mad, 1e-3)


def _line_values(image: np.ndarray) -> dict[str, float]:
    h, w = image.shape
    segments = max(1, w // 256)
    seg_w = w // segments
    acc = np.uint32 if image.dtype in (np.uint8, np.uint16) else np.float64
    sums = image[:, : segments * seg_w].reshape(h, segments, seg_w).sum(axis=2, dtype=acc)
    rows = sums.astype(np.float32) / seg_w
    streak = float(_robust_z(rows, 31).max())
    n = min(w, 1024)
    x0 = (w - n) // 2
    raw = image[:, x0 : x0 + n].astype(np.float32)
    sub = raw[:, :-2] + 2 * raw[:, 1:-1] + raw[:, 2:]  # damps shot noise more than texture
    sub -= sub.mean(axis=1, keepdims=True)
    n -= 2
    spectra = fft.rfft(sub, axis=1)
    lags = fft.irfft(spectra[:-1] * np.conj(spectra[1:]), n=n, axis=1)
    lags /= np.sqrt((sub[:-1] ** 2).sum(axis=1) * (sub[1:] ** 2).sum(axis=1))[:, None] + 1e-6
    sideways = np.concatenate([lags[:, 3:13], lags[:, -12:-2]], axis=1).max(axis=1)
    jump = sideways - lags[:, 0]  # > 0: a line matches its neighbour better when shifted
    line = float(_robust_z(jump, 31).max())
    return {"streak_z": streak, "line_z": line}


@functools.lru_cache(maxsize=8)
def _bands(
    n: int, focus_band: tuple[float, float], low_band: tuple[float, float]
) -> dict[str, np.ndarray]:
    fy = fft.fftfreq(n)[:, None]
    fx = fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    off_axis = (np.abs(fx) >= 2 / n) & (np.abs(fy) >= 2 / n)
    angle = np.degrees(np.arctan2(fy, fx)) % 180.0
    sector_band = off_axis & (f >= _SECTOR_EDGES[0]) & (f < _SECTOR_EDGES[1])
    sectors = [
        sector_band & ((angle - centre + 22.5) % 180.0 < 45.0) for centre in (0, 45, 90, 135)
    ]
    window = np.outer(np.hanning(n), np.hanning(n)).astype(np.float32)
    return {
        "low": off_axis & (f >= low_band[0]) & (f < low_band[1]),
        "mid": off_axis & (f >= focus_band[0]) & (f < focus_band[1]),
        "noise": off_axis & (f >= _NOISE[0]) & (f <= _NOISE[1]),
        "all": f > 0,
        "sectors": np.stack(sectors),
        "window": window,
        "norm": np.float32((window**2).sum()),
    }


def _crops(image: np.ndarray, n: int) -> list[np.ndarray]:
    h, w = image.shape
    per_axis = 3 if min(h, w) >= 3 * n else max(1, min(h, w) // n)
    ys = np.linspace(0, h - n, per_axis).astype(int)
    xs = np.linspace(0, w - n, per_axis).astype(int)
    return [image[y : y + n, x : x + n] for y in ys for x in xs]


def _spectral_values(
    image: np.ndarray, focus_band: tuple[float, float], low_band: tuple[float, float]
) -> dict[str, float]:
    n = min(_CROP, (min(image.shape) // 2) * 2)
    bands = _bands(n, tuple(focus_band), tuple(low_band))
    power = np.zeros((n, n // 2 + 1), dtype=np.float64)
    crops = _crops(image, n)
    for crop in crops:
        c = crop.astype(np.float32)
        c -= c.mean()
        spectrum = fft.rfft2(c * bands["window"])
        power += (spectrum.real**2 + spectrum.imag**2) / bands["norm"]
    power /= len(crops)
    noise = float(power[bands["noise"]].mean())
    low = float(power[bands["low"]].mean()) - noise
    mid = float(power[bands["mid"]].mean()) - noise
    sectors = [float(power[s].mean()) - noise for s in bands["sectors"]]
    signal = float(power[bands["all"]].mean()) - noise
    tiny = 1e-3 * max(noise, 1e-9)
    return {
        "focus": max(mid, tiny) / max(low, tiny),
        "astigmatism": max(max(sectors), tiny) / max(min(sectors), tiny),
        "snr_db": 10.0 * math.log10(max(signal, tiny) / max(noise, 1e-12)),
        "noise": math.sqrt(max(noise, 0.0)),
    }
