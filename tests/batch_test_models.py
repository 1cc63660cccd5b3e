"""Small real models for the batch-flow tests, loaded by workers through their import path,
e.g. ``"tests.batch_test_models:CountingThreshold"``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["CountingThreshold"]


class CountingThreshold:
    """Pixels above a fixed ``threshold``, 8-connected, labelled.

    ``count_file``: one line is appended per call (so a test counts model calls across worker
    processes). ``die_file``: when it exists, holds N and the count file has N lines, it is
    removed and the worker process exits hard - one real dead worker, as when a node or batch
    job is lost.
    """

    name = "counting-threshold"
    version = "1.0"

    def __init__(
        self, threshold: float = 500.0, count_file: str | None = None, die_file: str | None = None
    ) -> None:
        self.threshold = threshold
        self.count_file = Path(count_file) if count_file else None
        self.die_file = Path(die_file) if die_file else None

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        if self.count_file is not None:
            if self.die_file is not None and self.die_file.exists():
                limit = int(self.die_file.read_text())
                if len(self.count_file.read_text().splitlines()) >= limit:
                    self.die_file.unlink()
                    os._exit(3)
            with open(self.count_file, "a") as f:
                f.write(f"{os.getpid()}\n")
        labels, _ = ndimage.label(image > self.threshold, structure=np.ones((3, 3)))
        return labels.astype(np.int32)
