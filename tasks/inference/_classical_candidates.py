"""The classical nuclei of a real frame, and the candidates a more sensitive segmentation adds.

Otsu's threshold splits the bright nuclei from the rest, so it can leave out a dim nucleus
beside bright ones (or one cut by the field's edge) in one frame and find it in the next. A
time-lapse that carries one real frame's nuclei forward (carry-forward) repeats such a miss at
every predicted time point. ``segment`` is the classical model's own (so a frame is scored as
the static protocol's are); ``segment_with_extras`` appends, as labels after the classical
nuclei, the objects of the noise-threshold segmentation (``ClassicalNuclei(threshold="noise")``)
whose centroid lies in none of them, and reports how many of the labels are the classical
model's (``extra["classical_nuclei"]``). A candidate is not a nucleus on its own word:
carry-forward adds one to its reference only where the virtual stain of the brightfield frame
taken with it sees a nucleus too (``tasks.decisions._carry_forward.confirmed_candidates``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._classical import ClassicalNuclei

__all__ = ["ClassicalCandidates"]


class ClassicalCandidates:
    """``load_model("classical-candidates")``: the classical nuclei (``segment``), and with
    ``segment_with_extras`` the sensitive segmentation's extra objects after them."""

    name = "classical-candidates"
    version = "1.0"
    device = "cpu"

    def __init__(self, *, contrast: float = 8.0, **classical: Any) -> None:
        self.classical = ClassicalNuclei(**classical)
        sensitive = {**classical, "threshold": "noise", "contrast": contrast}
        self.sensitive = ClassicalNuclei(**sensitive)

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        return self.classical.segment(image, pixel_size_um=pixel_size_um)

    def segment_with_extras(
        self, image: np.ndarray, *, pixel_size_um: float | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Labels 1..n the classical nuclei, n+1.. the candidates (their pixels outside the
        classical nuclei); ``classical_nuclei``: n."""
        labels = np.asarray(self.segment(image, pixel_size_um=pixel_size_um), np.int32).copy()
        n = int(labels.max())
        sensitive = np.asarray(self.sensitive.segment(image, pixel_size_um=pixel_size_um))
        next_label = n + 1
        for obj in range(1, int(sensitive.max()) + 1):
            rows, cols = np.nonzero(sensitive == obj)
            if not len(rows):
                continue
            centre = (round(float(rows.mean())), round(float(cols.mean())))
            if labels[centre]:
                continue  # the classical model has a nucleus there
            free = labels[rows, cols] == 0
            labels[rows[free], cols[free]] = next_label
            next_label += 1
        return labels, {"classical_nuclei": float(n)}
