"""Registers the models that ship with scopeflow (imported lazily by the registry).

Factories import their modules on first use, so importing this module pulls in neither
torch nor scikit-image. Re-importing it (e.g. ``importlib.reload``) registers nothing twice.
"""

from __future__ import annotations

import contextlib
from typing import Any

from scopeflow import ConfigurationError

from ._protocol import RestorationModel, SegmentationModel
from ._registry import register_model

__all__ = ["BUILTIN_MODELS", "BUILTIN_RESTORATION_MODELS"]


def classical(**options: Any) -> SegmentationModel:
    """``ClassicalNuclei(**options)``: Otsu + distance watershed (tasks.inference._classical)."""
    from ._classical import ClassicalNuclei

    return ClassicalNuclei(**options)


def classical_candidates(**options: Any) -> SegmentationModel:
    """``ClassicalCandidates(**options)``: the classical nuclei and a more sensitive
    segmentation's extra objects as candidates (tasks.inference._classical_candidates)."""
    from ._classical_candidates import ClassicalCandidates

    return ClassicalCandidates(**options)


def unet(**options: Any) -> SegmentationModel:
    """``UNetNuclei(**options)``: the shipped U-Net, or ``weights=PATH`` (tasks.inference._unet)."""
    from ._unet import UNetNuclei

    return UNetNuclei(**options)


def virtual_stain(**options: Any) -> SegmentationModel:
    """``VirtualStainNuclei(**options)``: nuclei from brightfield, with the ensemble's doubt."""
    from ._virtual_stain import VirtualStainNuclei

    return VirtualStainNuclei(**options)


def gaussian(**options: Any) -> RestorationModel:
    """``GaussianRestorer(sigma=...)``: the classical blur baseline (tasks.inference._gaussian)."""
    from ._gaussian import GaussianRestorer

    return GaussianRestorer(**options)


def care(**options: Any) -> RestorationModel:
    """``CareDenoiser(mode="care", **options)``: supervised U-Net denoiser (``weights=PATH``)."""
    from ._care import CareDenoiser

    return CareDenoiser(**{"mode": "care", **options})


def n2v(**options: Any) -> RestorationModel:
    """``CareDenoiser(mode="n2v", **options)``: the Noise2Void-trained network."""
    from ._care import CareDenoiser

    return CareDenoiser(**{"mode": "n2v", **options})


BUILTIN_MODELS = {
    "classical": classical,
    "classical-candidates": classical_candidates,
    "unet": unet,
    "virtual-stain": virtual_stain,
}
BUILTIN_RESTORATION_MODELS = {"care": care, "gaussian": gaussian, "n2v": n2v}


def _register() -> None:
    # already registered (module re-imported, or a user's own model): keep that one
    for name, factory in BUILTIN_MODELS.items():
        with contextlib.suppress(ConfigurationError):
            register_model(name, factory)
    for name, factory in BUILTIN_RESTORATION_MODELS.items():
        with contextlib.suppress(ConfigurationError):
            register_model(name, factory, kind="restoration")


_register()
