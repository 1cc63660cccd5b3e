"""The worker side of both backends: a model loaded once in a worker process (a Ray actor, a
Dask worker plugin), segmenting the frames sent to it and measuring their objects there."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend_core import InferenceError, model_failure
from ._frame_analysis import analyse_frame, has_frame_extras
from ._measure import measure_objects
from ._registry import load_model

__all__ = ["LoadedModel"]

# model spec -> how many times this process loaded it (reported by info(); a test checks 1)
_loads_in_process: dict[str, int] = {}


class LoadedModel:
    """A model loaded in a worker process, with what ``info()`` reports about it."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        started = time.perf_counter()
        self.spec = spec
        self.model = load_model(spec, **options)
        self.load_seconds = time.perf_counter() - started
        _loads_in_process[spec] = _loads_in_process.get(spec, 0) + 1
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.frames = 0

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "model": getattr(self.model, "name", self.spec),
            "model_version": getattr(self.model, "version", None),
            "model_instance": id(self.model),
            "device": str(getattr(self.model, "device", "cpu")),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            # the batch job this worker runs in (a slurm / pbs compute profile), else None
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "pbs_job_id": os.environ.get("PBS_JOBID"),
            "loads_in_process": _loads_in_process.get(self.spec, 0),
            "load_seconds": round(self.load_seconds, 4),
            "frames": self.frames,
        }

    def run(
        self,
        frames: Sequence[Any],
        pixel_size_um: float | None,
        first_index: int | None,
        *,
        objects: bool = False,
    ) -> list[Any]:
        """Segment ``frames`` (segment_batch when the model has it); InferenceError on failure,
        naming the frame's index (``first_index`` + position). ``objects``: return each
        frame's ObjectTable (measured here, next to the frame) instead of its labels."""
        frames = [self._resolve(f, first_index, i) for i, f in enumerate(frames)]
        if objects and has_frame_extras(self.model):
            return [self._analyse(f, pixel_size_um, first_index, i) for i, f in enumerate(frames)]
        started = time.perf_counter()
        labels = self._segment(frames, pixel_size_um, first_index)
        model_ms = (time.perf_counter() - started) * 1e3 / max(1, len(frames))
        if not objects:
            return labels
        return [
            measure_objects(lab, np.asarray(frame), model_ms=model_ms)
            for frame, lab in zip(frames, labels, strict=True)
        ]

    def _analyse(
        self, frame: Any, pixel_size_um: float | None, first_index: int | None, position: int
    ) -> Any:
        """One frame's objects with the model's own frame numbers (``segment_with_extras``)."""
        try:
            table = analyse_frame(self.model, np.asarray(frame), pixel_size_um=pixel_size_um)
        except Exception as exc:
            index = None if first_index is None else first_index + position
            raise model_failure(self.spec, index, exc, self._where()) from None
        self.frames += 1
        return table

    def _resolve(self, frame: Any, first_index: int | None, position: int) -> Any:
        """Pixels for a shared-memory frame reference (read here, on the worker); else as is."""
        load = getattr(frame, "load", None)
        if not callable(load):
            return frame
        try:
            return load()
        except LookupError as exc:
            index = None if first_index is None else first_index + position
            raise InferenceError(
                f"frame {index}: {exc} ({self._where()})", model=self.spec, frame_index=index
            ) from None

    def _segment(
        self, frames: Sequence[Any], pixel_size_um: float | None, first_index: int | None
    ) -> list[np.ndarray]:
        model = self.model
        batch = getattr(model, "segment_batch", None)
        if len(frames) > 1 and callable(batch):
            try:
                labels = list(batch(frames, pixel_size_um=pixel_size_um))
            except Exception as exc:
                raise model_failure(self.spec, first_index, exc, self._where()) from None
            if len(labels) != len(frames):
                raise InferenceError(
                    f"model {self.spec!r} segment_batch returned {len(labels)} label images "
                    f"for {len(frames)} frames",
                    model=self.spec,
                    frame_index=first_index,
                )
        else:
            labels = []
            for i, frame in enumerate(frames):
                index = None if first_index is None else first_index + i
                try:
                    labels.append(model.segment(frame, pixel_size_um=pixel_size_um))
                except Exception as exc:
                    raise model_failure(self.spec, index, exc, self._where()) from None
        out = []
        for i, (frame, lab) in enumerate(zip(frames, labels, strict=True)):
            lab = np.asarray(lab)
            if lab.shape != np.shape(frame):
                index = None if first_index is None else first_index + i
                raise InferenceError(
                    f"model {self.spec!r} returned labels of shape {lab.shape} for a frame of "
                    f"shape {np.shape(frame)} (frame {index}); labels must match the frame",
                    model=self.spec,
                    frame_index=index,
                )
            out.append(lab if lab.dtype == np.int32 else lab.astype(np.int32))
        self.frames += len(frames)
        return out

    def _where(self) -> str:
        return f"pid {self.pid} on {self.host}"
