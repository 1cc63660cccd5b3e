"""Small but real segmentation models for the backend tests.

Workers load them by import path, e.g. ``"tests.inference_test_models:ThresholdModel"``, so
the repository root must be on the workers' ``sys.path`` (the backends arrange that locally).
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
from scipy import ndimage

__all__ = ["POISON", "FailingModel", "OneSlowWorker", "SlowModel", "ThresholdModel"]

# a frame whose first pixel holds this value makes FailingModel raise
POISON = 4095


class ThresholdModel:
    """Pixels above ``threshold`` (default: the frame's mean + 1 std), 4-connected, labelled."""

    name = "threshold-test"
    version = "1.0"
    device = "cpu"

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold
        self.pid = os.getpid()
        self.instance = uuid.uuid4().hex

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"ThresholdModel takes a non-empty 2D image, got shape {image.shape}")
        data = image.astype(np.float32, copy=False)
        threshold = self.threshold
        if threshold is None:
            threshold = float(data.mean() + data.std())
        labels, _ = ndimage.label(data > threshold)
        return labels.astype(np.int32, copy=False)


class FailingModel(ThresholdModel):
    """Like ThresholdModel, but raises ValueError on a frame whose first pixel is POISON."""

    name = "failing-test"

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        if int(image.flat[0]) == POISON:
            raise ValueError(f"poisoned frame (first pixel {POISON}) refused on purpose")
        return super().segment(image, pixel_size_um=pixel_size_um)


class SlowModel(ThresholdModel):
    """Like ThresholdModel, after sleeping ``delay_s`` per frame."""

    name = "slow-test"

    def __init__(self, delay_s: float = 2.0, threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.delay_s = delay_s

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().segment(image, pixel_size_um=pixel_size_um)


class SlowFirstCall(ThresholdModel):
    """Like ThresholdModel, but its first frame takes ``delay_s`` longer: a model whose first
    call loads weights or compiles, as the U-Net's does on a fresh worker."""

    name = "slow-first-call"

    def __init__(self, delay_s: float = 2.0, threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.delay_s = delay_s

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
            self.delay_s = 0.0
        return super().segment(image, pixel_size_um=pixel_size_um)


class SlowWhileFlagged(ThresholdModel):
    """Like ThresholdModel, but sleeps ``delay_s`` per frame while the file ``flag`` exists:
    a remote worker that becomes slow and recovers, under the test's control."""

    name = "slow-while-flagged"

    def __init__(self, flag: str, delay_s: float = 0.5, threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.flag = flag
        self.delay_s = delay_s

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        import os
        import time

        if os.path.exists(self.flag):
            time.sleep(self.delay_s)
        return super().segment(image, pixel_size_um=pixel_size_um)


class OneSlowWorker(ThresholdModel):
    """Like ThresholdModel; the first process to load it claims the file ``claim`` (writing its
    pid there) and sleeps ``delay_s`` per frame, every other process is fast: one slow worker
    among fast ones, known by its pid."""

    name = "one-slow-worker"

    def __init__(self, claim: str, delay_s: float = 0.5, threshold: float | None = None) -> None:
        super().__init__(threshold)
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            self.delay_s = 0.0
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            self.delay_s = delay_s

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().segment(image, pixel_size_um=pixel_size_um)
