"""Restoration quality: PSNR / SSIM against a clean reference, and the best-blur baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FMD_CONFOCAL_FISH", "BlurBaseline", "best_gaussian_blur", "load_pair", "psnr", "ssim"]

FMD_CONFOCAL_FISH = ("denoise_pairs", "fmd_confocal_fish")


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB with the reference's data range (max - min)."""
    from skimage.metrics import peak_signal_noise_ratio

    ref = np.asarray(reference, np.float64)
    rng = float(ref.max() - ref.min()) or 1.0
    return float(peak_signal_noise_ratio(ref, np.asarray(image, np.float64), data_range=rng))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """SSIM (scikit-image defaults) with the reference's data range."""
    from skimage.metrics import structural_similarity

    ref = np.asarray(reference, np.float64)
    rng = float(ref.max() - ref.min()) or 1.0
    return float(structural_similarity(ref, np.asarray(image, np.float64), data_range=rng))


@dataclass(frozen=True)
class BlurBaseline:
    sigma: float
    psnr: float
    ssim: float
    image: np.ndarray


def best_gaussian_blur(
    reference: np.ndarray, noisy: np.ndarray, sigmas: np.ndarray | None = None
) -> BlurBaseline:
    """The Gaussian blur of ``noisy`` with the highest PSNR, sigma chosen in hindsight.

    Coarse grid (0.05 px steps up to 6 px), then a 0.005 px refinement around the winner.
    """
    from scipy import ndimage as ndi

    img = np.asarray(noisy, np.float32)
    grid = np.arange(0.05, 6.0, 0.05) if sigmas is None else np.asarray(sigmas, float)

    def score(s: float) -> float:
        return psnr(reference, ndi.gaussian_filter(img, s))

    best = max(grid, key=score)
    fine = np.arange(max(best - 0.05, 0.005), best + 0.05, 0.005)
    best = float(max(fine, key=score))
    out = ndi.gaussian_filter(img, best)
    return BlurBaseline(best, psnr(reference, out), ssim(reference, out), out)


def load_pair(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 from a folder holding ``noisy_*`` and ``gt_*`` images."""
    from skimage import io

    noisy = sorted(folder.glob("noisy_*"))
    clean = sorted(folder.glob("gt_*"))
    if len(noisy) != 1 or len(clean) != 1:
        raise FileNotFoundError(f"{folder} should hold one noisy_* and one gt_* image")
    return (
        np.asarray(io.imread(noisy[0]), np.float32),
        np.asarray(io.imread(clean[0]), np.float32),
    )
