"""Training frames for the virtual stain: a brightfield frame (the cheap channel) and the
nuclei the DAPI channel (the expensive one) would show, from the simulator's ground truth.

Building a simulated slide costs about a second and rendering a frame a tenth of that, so each
slide (its density and clustering drawn at random) gives many frames at random places, times
and focus. ``dapi`` (optional) is the real expensive frame at the same place and time, for
scoring what a real acquisition would have given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from ._training_data import FrameSettings, simulated_slide

__all__ = ["CHEAP_CHANNEL", "EXPENSIVE_CHANNEL", "StainFrame", "stain_frames"]

CHEAP_CHANNEL = "BF"
EXPENSIVE_CHANNEL = "DAPI"
_MARGIN_UM = 400.0


@dataclass(frozen=True)
class StainFrame:
    """One position: brightfield (and DAPI) frames (uint16) and the nuclei's labels."""

    brightfield: np.ndarray
    labels: np.ndarray  # int32, 0 background
    ignore: np.ndarray  # bool: nuclei too blurred to be segmented
    pixel_size_um: float
    dapi: np.ndarray | None = None


def stain_frames(
    seed: int, slides: int, per_slide: int, *, size: int = 384, with_dapi: bool = False
) -> Iterator[StainFrame]:
    """``slides`` x ``per_slide`` 20x frames of slides of 150-600 nuclei per mm² (the
    simulator's default is 300), deterministic by ``seed``."""
    from tasks.hardware.sim import truth_labels

    rng = np.random.default_rng([seed, 4241])
    for _ in range(slides):
        settings = FrameSettings(
            seed=int(rng.integers(0, 2**31 - 1)),
            size=size,
            objective="20x",
            nuclei_per_mm2=float(math.exp(rng.uniform(math.log(150.0), math.log(600.0)))),
            cluster_fraction=float(rng.uniform(0.1, 0.7)),
            out_of_focus_fraction=float(rng.uniform(0.0, 0.08)),
        )
        cfg, sim = simulated_slide(settings)
        px = cfg.pixel_size_um("20x")
        for _ in range(per_slide):
            x, y = rng.uniform(_MARGIN_UM, cfg.slide_width_um - _MARGIN_UM, 2)
            base = replace(
                sim.state(),
                x_um=float(x),
                y_um=float(y),
                z_um=cfg.focal_plane_z_um + float(rng.normal(0.0, 0.6)),
                objective="20x",
                illuminated=True,
                t_s=float(rng.uniform(0.0, 3600.0 * 20)),
            )
            bf = replace(
                base,
                channel=CHEAP_CHANNEL,
                exposure_ms=float(rng.uniform(5.0, 30.0)),
                intensity_pct=float(rng.uniform(20.0, 100.0)),
            )
            dapi_state = replace(
                base, channel=EXPENSIVE_CHANNEL, exposure_ms=50.0, intensity_pct=100.0
            )
            labels, ignore, _ids = truth_labels(sim, dapi_state)
            dapi = sim.renderer.render(dapi_state)[0].copy() if with_dapi else None
            yield StainFrame(sim.renderer.render(bf)[0].copy(), labels, ignore, px, dapi)
