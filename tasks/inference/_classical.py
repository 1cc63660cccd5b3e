"""Classical nuclei segmentation: smoothing, Otsu, distance-transform peaks, watershed."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_PIXEL_SIZE_UM", "ClassicalNuclei", "check_image"]

DEFAULT_PIXEL_SIZE_UM = 0.65  # 10x overview on a 6.5 µm camera, binning 1


def check_image(image: np.ndarray, model: str) -> np.ndarray:
    """The image as float32 2D, or ValueError saying what is wrong and what to pass."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(
            f"{model}: expected one 2D image (rows, cols), got shape {arr.shape}; pass a single "
            "plane (e.g. image[0] or image.max(axis=0)) per call"
        )
    if arr.size == 0:
        raise ValueError(f"{model}: the image is empty (shape {arr.shape}); pass a non-empty frame")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{model}: expected an integer or float image, got dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"{model}: the image holds NaN or inf; replace them before segmenting")
    return out


def check_pixel_size(pixel_size_um: float | None, model: str) -> float:
    px = DEFAULT_PIXEL_SIZE_UM if pixel_size_um is None else float(pixel_size_um)
    if not (math.isfinite(px) and px > 0):
        raise ValueError(f"{model}: pixel_size_um must be a positive number of µm, got {px!r}")
    return px


class ClassicalNuclei:
    """Otsu + distance-transform watershed, scaled to the expected nucleus size in µm.

    ``nucleus_radius_um``: typical nucleus radius; ``min_radius_um``: smaller objects are
    dropped. Both are converted to pixels with the ``pixel_size_um`` given to ``segment``.
    ``working_radius_px``: when a nucleus spans more pixels than this, the frame is binned by
    the integer factor that brings it near this size, segmented, and the labels scaled back
    (e.g. 4 at 0.65 µm/px: bin 2, 3x faster on 2048², F1 0.99 against full resolution);
    None segments at full resolution. ``threshold``: "otsu" (Otsu's threshold, at least
    ``contrast`` noise sigmas above the background) or "noise" (``contrast`` noise sigmas above
    the background, the median and MAD of the whole smoothed frame: finds dim nuclei beside
    bright ones, which Otsu's split between the bright ones and the rest leaves out).
    """

    name = "classical"
    version = "1.0"
    device = "cpu"

    def __init__(
        self,
        *,
        nucleus_radius_um: float = 6.0,
        min_radius_um: float = 2.0,
        smoothing: float = 0.15,
        seed_separation: float = 0.5,
        working_radius_px: float | None = None,
        threshold: str = "otsu",
        contrast: float = 8.0,
    ) -> None:
        if threshold not in ("otsu", "noise"):
            raise ValueError(f"threshold must be 'otsu' or 'noise', got {threshold!r}")
        if not contrast > 0:
            raise ValueError(f"contrast must be a positive number of noise sigmas, got {contrast}")
        self.threshold = threshold
        self.contrast = float(contrast)
        if not 0 < min_radius_um <= nucleus_radius_um:
            raise ValueError(
                "need 0 < min_radius_um <= nucleus_radius_um, got "
                f"{min_radius_um} and {nucleus_radius_um}"
            )
        self.nucleus_radius_um = float(nucleus_radius_um)
        self.min_radius_um = float(min_radius_um)
        self.smoothing = float(smoothing)
        self.seed_separation = float(seed_separation)
        if working_radius_px is not None and working_radius_px < 2:
            raise ValueError(
                f"working_radius_px must be >= 2 (pixels per nucleus radius), got "
                f"{working_radius_px}; or None for full resolution"
            )
        self.working_radius_px = working_radius_px

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        img = check_image(image, self.name)
        px = check_pixel_size(pixel_size_um, self.name)
        factor = self._binning(px, img.shape)
        if factor == 1:
            return self._segment(img, px)
        h, w = img.shape
        hb, wb = h // factor, w // factor
        binned = img[: hb * factor, : wb * factor].reshape(hb, factor, wb, factor).mean((1, 3))
        small = self._segment(binned, px * factor)
        labels = np.zeros((h, w), np.int32)
        labels[: hb * factor, : wb * factor] = np.repeat(np.repeat(small, factor, 0), factor, 1)
        return labels

    def _binning(self, pixel_size_um: float, shape: tuple[int, ...]) -> int:
        if self.working_radius_px is None:
            return 1
        factor = int(self.nucleus_radius_um / pixel_size_um / self.working_radius_px)
        return max(1, min(factor, min(shape) // 16))

    def _segment(self, img: np.ndarray, px: float) -> np.ndarray:
        from scipy import ndimage as ndi
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        r_px = self.nucleus_radius_um / px
        min_area = math.pi * (self.min_radius_um / px) ** 2
        if float(img.max()) <= float(img.min()):
            return np.zeros(img.shape, np.int32)
        smooth = ndi.gaussian_filter(img, max(0.5, self.smoothing * r_px))
        if self.threshold == "noise":
            level, threshold = _noise_threshold(smooth, self.contrast)
            fg = smooth > threshold
        else:
            fg = smooth > _foreground_threshold(smooth, self.contrast)
        fg = ndi.binary_fill_holes(fg)
        fg = _remove_small(fg, min_area)
        if not fg.any():
            return np.zeros(img.shape, np.int32)
        dist = ndi.distance_transform_edt(fg)
        dist = ndi.gaussian_filter(dist, max(0.5, 0.1 * r_px))
        comps, _ = ndi.label(fg)
        peaks = peak_local_max(
            dist,
            min_distance=max(1, round(self.seed_separation * r_px)),
            threshold_abs=0.25 * self.min_radius_um / px,
            labels=comps,
            exclude_border=False,
        )
        markers = np.zeros(img.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
        labels = watershed(-dist, markers, mask=fg)
        if self.threshold == "noise":
            labels = _half_maximum(labels, smooth, level)
        labels = _remove_small(labels, min_area)
        return relabel(labels)


def _foreground_threshold(smooth: np.ndarray, contrast: float = 8.0) -> float:
    """Otsu's threshold, but at least ``contrast`` noise sigmas above the background.

    Otsu always splits an image in two: on a field without a nucleus (an empty spot of a
    sparse well) it would split the noise into hundreds of objects. The background's level and
    noise are the median and MAD of the pixels under Otsu's threshold.
    """
    from skimage.filters import threshold_otsu

    otsu = float(threshold_otsu(smooth))
    below = smooth[smooth <= otsu]
    if below.size == 0:
        return otsu
    level = float(np.median(below))
    sigma = 1.4826 * float(np.median(np.abs(below - level)))
    return max(otsu, level + contrast * sigma)


def _noise_threshold(smooth: np.ndarray, contrast: float) -> tuple[float, float]:
    """(background level, ``contrast`` noise sigmas above it): the median and MAD of all
    pixels (nuclei cover a minority of the frame)."""
    level = float(np.median(smooth))
    sigma = 1.4826 * float(np.median(np.abs(smooth - level)))
    return level, level + contrast * max(sigma, 1e-6)


def _half_maximum(labels: np.ndarray, smooth: np.ndarray, level: float) -> np.ndarray:
    """Each object cut to where it is above half its peak over the background: a blurred edge
    crosses half height where the nucleus ends, whatever its brightness (a fixed threshold
    draws a dim nucleus too small and a bright one, with its blur, too large)."""
    from scipy import ndimage as ndi

    n = int(labels.max())
    if n == 0:
        return labels
    peaks = np.asarray(ndi.maximum(smooth, labels, np.arange(1, n + 1)), np.float32)
    half = np.concatenate([[np.inf], level + 0.5 * (peaks - level)]).astype(np.float32)
    keep = ndi.binary_fill_holes(smooth > half[labels])
    return np.where(keep & (labels > 0), labels, 0).astype(np.int32)


def _remove_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Zero objects (bool: connected components) smaller than ``min_area`` pixels."""
    from scipy import ndimage as ndi

    if labels.dtype == bool:
        lab, _ = ndi.label(labels)
        return _remove_small(lab, min_area) > 0
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def relabel(labels: np.ndarray) -> np.ndarray:
    """int32 labels 1..N consecutive, 0 background."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]
