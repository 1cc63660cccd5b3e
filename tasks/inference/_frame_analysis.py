"""One frame segmented and measured where it is, with what the model says of the frame itself.

A model that has ``segment_with_extras(image, pixel_size_um=...) -> (labels, {name: float})``
(e.g. the virtual stain's uncertainty) gets those numbers into the ObjectTable's ``extra``, so
they reach the live loop's policy from a remote worker as from the local fallback.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from scopeflow import ObjectTable

from ._measure import measure_objects

__all__ = ["analyse_frame", "has_frame_extras"]


def has_frame_extras(model: Any) -> bool:
    """True when ``model`` reports per-frame numbers besides its labels."""
    return callable(getattr(model, "segment_with_extras", None))


def analyse_frame(
    model: Any, image: np.ndarray, *, pixel_size_um: float | None, model_ms: float | None = None
) -> ObjectTable:
    """``model``'s objects in ``image`` (their table's ``extra``: the model's frame numbers);
    ``model_ms``: the model's time, measured here when None."""
    import time

    started = time.perf_counter()
    if has_frame_extras(model):
        labels, extras = model.segment_with_extras(image, pixel_size_um=pixel_size_um)
    else:
        labels, extras = model.segment(image, pixel_size_um=pixel_size_um), {}
    if model_ms is None:
        model_ms = (time.perf_counter() - started) * 1e3
    table = measure_objects(np.asarray(labels), np.asarray(image), model_ms=model_ms)
    if not extras:
        return table
    return replace(table, extra={str(k): float(v) for k, v in extras.items()})
