"""What a segmentation model must offer to be registered and run on any backend."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["RestorationModel", "SegmentationModel"]


@runtime_checkable
class SegmentationModel(Protocol):
    """Turns one 2D image into an instance label image.

    Required:
    - ``name``, ``version``: recorded as provenance with every result.
    - ``segment(image, pixel_size_um=...)``: ``image`` is 2D (any integer or float dtype);
      returns an int32 label image of the same shape, 0 = background, 1..N = objects.
      ``pixel_size_um`` lets a model rescale to the size it was trained at.
    Optional:
    - ``segment_batch(images, pixel_size_um=...)``: many images at once (a GPU model batches);
      backends call it when present, else ``segment`` per image.
    - ``device``: "cpu" or "cuda:N", for reports.
    Failure path: raise ``ValueError`` for an image the model cannot take (wrong ndim, empty);
    the backend reports it with the frame index instead of dropping the frame.
    """

    name: str
    version: str

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray: ...


@runtime_checkable
class RestorationModel(Protocol):
    """Turns one 2D image into a restored (e.g. denoised) image of the same shape.

    Required:
    - ``name``, ``version``: recorded as provenance with every result.
    - ``restore(image, pixel_size_um=...)``: ``image`` is 2D (any integer or float dtype);
      returns a float32 image of the same shape, in the input's intensity units (so a
      restored uint16 frame can be cast back without rescaling).
    Optional: ``restore_batch(images, pixel_size_um=...)`` and ``device`` as for segmentation.
    Failure path: raise ``ValueError`` for an image the model cannot take.
    """

    name: str
    version: str

    def restore(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray: ...
