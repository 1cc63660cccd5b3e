"""Virtual staining with its own doubt: nuclei predicted from brightfield by a small ensemble.

A cheap transmitted-light frame goes through ``members`` small U-Nets (trained on the simulator
from different seeds and data draws, ``tasks.training.train_virtual_stain``); the mean of their
(background, interior, boundary) probabilities gives the nuclei, the members' disagreement the
uncertainty. A frame's uncertainty is how much the members disagree on the nuclei themselves
(not on their edges' exact pixels): one minus the mean instance F1 of each member's nuclei
against the ensemble's. When it passes a threshold, an uncertainty-triggered protocol acquires
the real (expensive) channel instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConfigurationError

from ._classical import check_image, check_pixel_size
from ._metrics import instance_scores
from ._unet import build_unet, labels_from_probabilities, normalize_percentiles

__all__ = [
    "VIRTUAL_STAIN_FORMAT",
    "VIRTUAL_STAIN_TRAIN_COMMAND",
    "VIRTUAL_STAIN_WEIGHTS",
    "VirtualStainNuclei",
]

VIRTUAL_STAIN_WEIGHTS = Path(__file__).parent / "weights" / "virtual_stain.pt"
VIRTUAL_STAIN_FORMAT = 1
VIRTUAL_STAIN_TRAIN_COMMAND = (
    "python -m tasks.training.train_virtual_stain --seed 0 "
    "--out tasks/inference/weights/virtual_stain.pt"
)


class VirtualStainNuclei:
    """``load_model("virtual-stain", weights=PATH)``: brightfield in, nuclei
    labels out; ``segment_with_extras`` adds the frame's uncertainty (see the module)."""

    name = "virtual-stain"

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        interior_threshold: float = 0.4,
        num_threads: int | None = None,
    ) -> None:
        import torch

        path = Path(weights) if weights is not None else VIRTUAL_STAIN_WEIGHTS
        if not path.is_file():
            raise ConfigurationError(
                f"virtual-stain weights not found: {path}; train them with "
                f"`{VIRTUAL_STAIN_TRAIN_COMMAND}` (about a minute on 2 cores), or pass "
                "weights=PATH"
            )
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            meta = dict(ckpt["meta"])
            if int(meta.get("format", -1)) != VIRTUAL_STAIN_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {VIRTUAL_STAIN_FORMAT}")
            nets = []
            for state in ckpt["members"]:
                net = build_unet(tuple(meta["channels"]), 3)
                net.load_state_dict(state)
                nets.append(net.eval())
            if not nets:
                raise ValueError("the file holds no ensemble members")
        except Exception as exc:  # a corrupt or foreign file: say which and how to fix it
            raise ConfigurationError(
                f"cannot load virtual-stain weights from {path}: {exc}; retrain them with "
                f"`{VIRTUAL_STAIN_TRAIN_COMMAND}`"
            ) from exc
        if num_threads is not None:
            torch.set_num_threads(max(1, int(num_threads)))
        self.nets = nets
        self.meta = meta
        self.weights_path = str(path)
        self.device = "cpu"
        self.canonical_pixel_um = float(meta["canonical_pixel_um"])
        self.interior_threshold = float(interior_threshold)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        self.version = f"{meta.get('version', '0')}+{digest}"

    @property
    def threshold(self) -> float:
        """The frame uncertainty above which the real channel is worth acquiring, calibrated
        at training on held-out frames (see ``train_virtual_stain``)."""
        return float(self.meta["threshold"])

    def predict(
        self, image: np.ndarray, *, pixel_size_um: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean class probabilities (3, h, w), foreground std (h, w)) at the canonical pixel
        size (``self.canonical_pixel_um``)."""
        probs, std, _members = self._predict(image, pixel_size_um)
        return probs, std

    def _predict(
        self, image: np.ndarray, pixel_size_um: float | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        image = check_image(image, self.name)
        px = check_pixel_size(pixel_size_um, self.name)
        x = torch.from_numpy(normalize_percentiles(image))[None, None]
        scale = px / self.canonical_pixel_um
        h, w = image.shape
        size = (max(8, round(h * scale)) // 4 * 4, max(8, round(w * scale)) // 4 * 4)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        with torch.inference_mode():
            probs = torch.stack([torch.softmax(net(x), dim=1)[0] for net in self.nets])
        fg = probs[:, 1] + probs[:, 2]
        return probs.mean(0).numpy(), fg.std(0, unbiased=False).numpy(), probs.numpy()

    def segment_with_extras(
        self, image: np.ndarray, *, pixel_size_um: float | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Nuclei labels at the input's size and the frame's ``uncertainty``: one minus the
        members' mean agreement with the ensemble on the nuclei themselves (instance F1 at IoU
        0.5 of each member's nuclei against the ensemble's), 0 when every member finds the same
        nuclei; ``std_mean``: the mean foreground standard deviation."""
        probs, std, members = self._predict(image, pixel_size_um)
        small = self._labels(probs)
        agreement = [instance_scores(small, self._labels(m)).f1 for m in members]
        h, w = np.shape(image)
        rows = np.minimum((np.arange(h) + 0.5) * small.shape[0] / h, small.shape[0] - 1)
        cols = np.minimum((np.arange(w) + 0.5) * small.shape[1] / w, small.shape[1] - 1)
        labels = small[np.ix_(rows.astype(np.int64), cols.astype(np.int64))]
        extras = {
            "uncertainty": float(1.0 - np.mean(agreement)),
            "nuclei": float(small.max()),
            "std_mean": float(std.mean()),
        }
        return labels.astype(np.int32), extras

    def _labels(self, probs: np.ndarray) -> np.ndarray:
        return labels_from_probabilities(
            probs,
            self.canonical_pixel_um,
            interior_threshold=self.interior_threshold,
            foreground_threshold=self.interior_threshold,
        )

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        return self.segment_with_extras(image, pixel_size_um=pixel_size_um)[0]

    def info(self) -> dict[str, Any]:
        return {
            "members": len(self.nets),
            "threshold": self.threshold,
            "weights": self.weights_path,
        }
