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
    "simulated_frame",
    "simulated_frames",
]

_SLIDE_UM = 2000.0  # a small slide: fast to build, still thousands of cells


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
    from tasks.hardware.sim import truth_labels

    labels, ignore, ids = truth_labels(sim, state)
    px = cfg.pixel_size_um(s.objective, s.binning)
    return SimFrame(image.copy(), labels, ignore, px, s, ids)


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
