"""A small U-Net for nuclei: 3 classes (background, interior, boundary) + watershed.

The network runs at a canonical pixel size (``CANONICAL_PIXEL_UM``): inputs are rescaled by
``pixel_size_um``, normalised by robust percentiles, tiled with overlap when large, and the
class probabilities are resized back before the interior seeds grow into instances.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scopeflow import ConfigurationError

from ._classical import check_image, check_pixel_size, relabel
from ._tiling import check_precision, default_tile, map_same_shape, predict_tiled

if TYPE_CHECKING:
    import torch

__all__ = [
    "CANONICAL_PIXEL_UM",
    "DEFAULT_CHANNELS",
    "DEFAULT_WEIGHTS",
    "WEIGHTS_FORMAT",
    "UNetNuclei",
    "build_unet",
    "labels_from_probabilities",
    "normalize_percentiles",
]

CANONICAL_PIXEL_UM = 1.0
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "unet_nuclei.pt"
WEIGHTS_FORMAT = 1
DEFAULT_CHANNELS = (16, 32, 64, 96)
_TRAIN_HINT = (
    "train it with `python -m tasks.training.train_unet --seed 0 --out "
    "tasks/inference/weights/unet_nuclei.pt`, or pass weights=PATH to load_model('unet', ...)"
)


def normalize_percentiles(
    image: np.ndarray, low: float = 1.0, high: float = 99.8, max_samples: int = 1 << 20
) -> np.ndarray:
    """(image - p_low) / (p_high - p_low) as float32; percentiles from a strided subsample."""
    flat = image.ravel()
    step = max(1, flat.size // max_samples)
    lo, hi = np.percentile(flat[::step], [low, high])
    scale = float(hi - lo)
    if scale <= 0:
        scale = float(flat.max() - lo) or 1.0
    return ((image - lo) / scale).astype(np.float32)


def build_unet(
    channels: tuple[int, ...] = DEFAULT_CHANNELS,
    n_classes: int = 3,
    *,
    batchnorm: bool = True,
    zero_head: bool = False,
) -> Any:
    """The network (a torch ``nn.Module``); torch is imported here, not at module import.

    ``batchnorm``: conv + BatchNorm + ReLU blocks and max pooling (the segmentation U-Net);
    without it, conv + LeakyReLU blocks and average pooling (the restoration nets: their output
    must not depend on batch statistics). ``zero_head``: the output layer starts at zero, so a
    residual net starts as the identity.
    """
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        if not batchnorm:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.LeakyReLU(0.1, inplace=True),
            )
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList()
            cin = 1
            for c in channels:
                self.down.append(block(cin, c))
                cin = c
            self.pool = nn.MaxPool2d(2) if batchnorm else nn.AvgPool2d(2)
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            for c_skip in reversed(channels[:-1]):
                self.up.append(nn.ConvTranspose2d(cin, c_skip, 2, stride=2))
                self.dec.append(block(2 * c_skip, c_skip))
                cin = c_skip
            self.head = nn.Conv2d(cin, n_classes, 1)
            if zero_head:
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, enc in enumerate(self.down):
                x = enc(x if i == 0 else self.pool(x))
                skips.append(x)
            for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1]), strict=True):
                x = dec(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    return UNet()


class UNetNuclei:
    """U-Net nuclei segmentation (``load_model("unet", weights=PATH, device="cpu")``).

    Options: ``weights`` (path to a ``.pt`` written by ``train_unet``; default the shipped
    file), ``device`` ("cpu", "cuda", "cuda:N"; default CUDA when available), ``num_threads``
    (CPU threads for torch), ``tile`` (canonical pixels per network pass; default 512 on the
    CPU, 2048 on a GPU), ``precision`` ("float32", or "bfloat16" autocast on CUDA),
    ``interior_threshold`` / ``foreground_threshold`` (probabilities
    for seeds and for the object mask), ``min_radius_um`` (smaller objects are dropped),
    ``split_depth_um`` (how deep a neck between two seeds must be to keep them apart).
    """

    name = "unet"

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        num_threads: int | None = None,
        tile: int | None = None,
        precision: str = "float32",
        interior_threshold: float = 0.5,
        foreground_threshold: float = 0.5,
        min_radius_um: float = 1.5,
        split_depth_um: float = 1.0,
    ) -> None:
        import torch

        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        if not path.is_file():
            raise ConfigurationError(f"U-Net weights file not found: {path}; {_TRAIN_HINT}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            meta = dict(ckpt["meta"])
            if int(meta.get("format", -1)) != WEIGHTS_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {WEIGHTS_FORMAT}")
            net = build_unet(tuple(meta["channels"]), int(meta["n_classes"]))
            net.load_state_dict(ckpt["state_dict"])
        except Exception as exc:  # a corrupt or foreign file: say which and how to fix it
            raise ConfigurationError(
                f"cannot load U-Net weights from {path}: {exc}; {_TRAIN_HINT}"
            ) from exc
        if num_threads is not None:
            torch.set_num_threads(max(1, int(num_threads)))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._torch_device = torch.device(device)
        self.device = str(self._torch_device)
        self.net = net.to(self._torch_device).eval()
        self.precision = check_precision(precision, self._torch_device)
        self.tile = int(tile) if tile is not None else default_tile(self._torch_device)
        if self.tile < 64:
            raise ConfigurationError(f"tile must be at least 64 pixels, got {self.tile}")
        self.meta = meta
        self.weights_path = str(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        self.version = f"{meta.get('version', '0')}+{digest}"  # provenance: code + weights
        self.canonical_pixel_um = float(meta.get("canonical_pixel_um", CANONICAL_PIXEL_UM))
        self.interior_threshold = float(interior_threshold)
        self.foreground_threshold = float(foreground_threshold)
        self.min_radius_um = float(min_radius_um)
        self.split_depth_um = float(split_depth_um)

    @property
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))

    # ------------------------------------------------------------------ inference

    def predict_probabilities(
        self, image: np.ndarray, *, pixel_size_um: float | None = None
    ) -> np.ndarray:
        """(3, H, W) float32 class probabilities at the input's resolution."""
        return self.predict_probabilities_batch([image], pixel_size_um=pixel_size_um)[0]

    def predict_probabilities_batch(
        self, images: list[np.ndarray], *, pixel_size_um: float | None = None
    ) -> np.ndarray:
        """(B, 3, H, W) probabilities for same-shape frames, run through the network together."""
        import torch
        import torch.nn.functional as F

        imgs = [check_image(im, self.name) for im in images]
        if len({im.shape for im in imgs}) != 1:
            raise ValueError(f"a batch needs frames of one shape, got {[i.shape for i in imgs]}")
        px = check_pixel_size(pixel_size_um, self.name)
        h, w = imgs[0].shape
        x = torch.from_numpy(np.stack([normalize_percentiles(im) for im in imgs]))[:, None]
        x = x.to(self._torch_device)
        scale = px / self.canonical_pixel_um
        ch, cw = max(8, round(h * scale)), max(8, round(w * scale))
        if (ch, cw) != (h, w):
            x = F.interpolate(
                x, size=(ch, cw), mode="bilinear", align_corners=False, antialias=scale < 1
            )
        logits = predict_tiled(
            self.net,
            x,
            out_channels=3,
            device=self._torch_device,
            tile=self.tile,
            multiple=2 ** (len(self.meta["channels"]) - 1),  # one halving per level
            precision=self.precision,
        )
        probs = torch.softmax(logits, dim=1)
        if (ch, cw) != (h, w):
            probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        return probs.numpy()

    def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        probs = self.predict_probabilities(image, pixel_size_um=pixel_size_um)
        px = check_pixel_size(pixel_size_um, self.name)
        return self.postprocess(probs, px)

    def segment_batch(
        self, images: list[np.ndarray], *, pixel_size_um: float | None = None
    ) -> list[np.ndarray]:
        """Frames of one shape share network passes; post-processing is per frame."""
        px = check_pixel_size(pixel_size_um, self.name)

        def segment_group(group: list[np.ndarray]) -> list[np.ndarray]:
            probs = self.predict_probabilities_batch(group, pixel_size_um=px)
            return [self.postprocess(p, px) for p in probs]

        return map_same_shape(images, segment_group)

    def postprocess(self, probs: np.ndarray, pixel_size_um: float) -> np.ndarray:
        """Instances from class probabilities (``labels_from_probabilities``)."""
        return labels_from_probabilities(
            probs,
            pixel_size_um,
            interior_threshold=self.interior_threshold,
            foreground_threshold=self.foreground_threshold,
            min_radius_um=self.min_radius_um,
            split_depth_um=self.split_depth_um,
        )


def labels_from_probabilities(
    probs: np.ndarray,
    pixel_size_um: float,
    *,
    interior_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_radius_um: float = 1.5,
    split_depth_um: float = 1.0,
) -> np.ndarray:
    """Instances from (background, interior, boundary) probabilities. Seeds: maxima (depth >=
    ``split_depth_um``) of the distance map of the interior mask, so touching nuclei whose
    interiors merge at a neck still get one seed each; grown by watershed on the interior
    probability over the foreground mask; small objects dropped.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    interior, fg = probs[1], probs[1] + probs[2]
    inner = interior > interior_threshold
    if not inner.any():
        return np.zeros(interior.shape, np.int32)
    dist = ndi.distance_transform_edt(inner) * pixel_size_um
    dist = ndi.gaussian_filter(dist, 0.5)
    seeds, _ = ndi.label(h_maxima(dist, split_depth_um).astype(bool) & inner)
    mask = (fg > foreground_threshold) | inner
    labels = watershed(-interior, seeds, mask=mask)
    min_area = math.pi * (min_radius_um / pixel_size_um) ** 2
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    return relabel(labels)
