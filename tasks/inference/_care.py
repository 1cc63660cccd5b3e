"""CARE-style denoiser: a small U-Net on percentile-normalised images, tiled with overlap.

The same network and the same ``CareDenoiser`` serve both training modes (``train_restoration
--mode care|n2v``); the weights file records which. Inputs are normalised by robust percentiles
of the input itself, the network predicts the clean image in that normalised scale, and the
result is mapped back, so the output is float32 in the input's intensity units.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scopeflow import ConfigurationError

from ._classical import check_image
from ._tiling import OVERLAP, check_precision, default_tile, map_same_shape, predict_tiled
from ._unet import build_unet

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_RESTORATION_CHANNELS",
    "DEFAULT_WEIGHTS",
    "PERCENTILES",
    "RESTORATION_WEIGHTS_FORMAT",
    "CareDenoiser",
    "build_restoration_net",
    "load_restoration_weights",
    "percentile_range",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = {"care": WEIGHTS_DIR / "care_denoise.pt", "n2v": WEIGHTS_DIR / "n2v_denoise.pt"}
RESTORATION_WEIGHTS_FORMAT = 1
DEFAULT_RESTORATION_CHANNELS = (16, 32, 64)
PERCENTILES = (1.0, 99.8)


def _train_hint(mode: str) -> str:
    return (
        f"train it with `python -m tasks.training.train_restoration --mode {mode} --seed 0 "
        f"--out {DEFAULT_WEIGHTS.get(mode, 'PATH')}`, or pass weights=PATH"
    )


def percentile_range(image: np.ndarray, max_samples: int = 1 << 20) -> tuple[float, float]:
    """(low, scale) so that (image - low) / scale maps the 1st..99.8th percentiles to 0..1."""
    flat = np.asarray(image).ravel()
    step = max(1, flat.size // max_samples)
    lo, hi = (float(v) for v in np.percentile(flat[::step], PERCENTILES))
    scale = hi - lo
    if scale <= 0:
        scale = float(flat.max()) - lo or 1.0
    return lo, scale


def _plain_unet(channels: tuple[int, ...]) -> Any:
    """U-Net without normalisation layers (conv + LeakyReLU), one output channel, starting as
    the identity when used residually.

    No BatchNorm: a denoiser's output must not depend on which other crops share its batch
    (train mode) or on running statistics gathered over mixed intensity scales (eval mode).
    """
    return build_unet(channels, n_classes=1, batchnorm=False, zero_head=True)


def build_restoration_net(
    channels: tuple[int, ...] = DEFAULT_RESTORATION_CHANNELS,
    residual: bool = True,
    batchnorm: bool = False,
) -> Any:
    """U-Net with one output channel; ``residual``: predicts a correction added to the input.

    CARE uses the residual form (the input already is a good first guess); Noise2Void does not,
    because its training input at the supervised pixel is a neighbour's value, not the pixel's.
    ``batchnorm`` rebuilds the first-generation network (the segmentation U-Net's blocks).
    """
    from torch import nn

    class RestorationNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if batchnorm:
                self.unet = build_unet(tuple(channels), n_classes=1)
            else:
                self.unet = _plain_unet(tuple(channels))
            self.residual = bool(residual)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.unet(x)
            return x + y if self.residual else y

    return RestorationNet()


def load_restoration_weights(path: Path, mode: str) -> tuple[Any, dict[str, Any]]:
    """(network in eval mode on CPU, metadata) from a ``.pt`` written by ``train_restoration``."""
    import torch

    if not path.is_file():
        raise ConfigurationError(f"{mode} weights file not found: {path}; {_train_hint(mode)}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = dict(ckpt["meta"])
        if int(meta.get("format", -1)) != RESTORATION_WEIGHTS_FORMAT:
            raise ValueError(
                f"format {meta.get('format')!r}, expected {RESTORATION_WEIGHTS_FORMAT}"
            )
        net = build_restoration_net(
            tuple(meta["channels"]), bool(meta["residual"]), bool(meta.get("batchnorm", True))
        )
        net.load_state_dict(ckpt["state_dict"])
    except Exception as exc:  # a corrupt or foreign file: say which and how to fix it
        raise ConfigurationError(
            f"cannot load {mode} weights from {path}: {exc}; {_train_hint(mode)}"
        ) from exc
    return net.eval(), meta


class CareDenoiser:
    """U-Net denoiser (``load_restoration_model("care" | "n2v", weights=PATH, device=...)``).

    Options: ``weights`` (a ``.pt`` from ``train_restoration``; default the shipped file for
    ``mode``), ``mode`` ("care" or "n2v": which shipped weights and the model's name),
    ``device`` ("cpu", "cuda", "cuda:N"; default CUDA when available), ``num_threads`` (CPU
    threads for torch), ``tile`` (pixels per tile side; large frames run tile by tile with a
    32-pixel overlap, so memory stays bounded; default 512 on the CPU, 2048 on a GPU),
    ``precision`` ("float32", or "bfloat16" autocast on CUDA), ``ensemble`` (1, or 8: average
    the outputs for the 8 flips/rotations of the frame; 8x the time, less residual noise).
    """

    def __init__(
        self,
        *,
        mode: str = "care",
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        num_threads: int | None = None,
        tile: int | None = None,
        precision: str = "float32",
        ensemble: int = 1,
    ) -> None:
        import torch

        if int(ensemble) not in (1, 8):
            raise ConfigurationError(f"ensemble must be 1 or 8, got {ensemble}")
        self.ensemble = int(ensemble)
        if mode not in DEFAULT_WEIGHTS:
            raise ConfigurationError(f"unknown restoration mode {mode!r}; use 'care' or 'n2v'")
        if tile is not None and int(tile) < 2 * OVERLAP:
            raise ConfigurationError(f"tile must be at least {2 * OVERLAP} pixels, got {tile}")
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS[mode]
        net, meta = load_restoration_weights(path, mode)
        if num_threads is not None:
            torch.set_num_threads(max(1, int(num_threads)))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._torch_device = torch.device(device)
        self.device = str(self._torch_device)
        self.net = net.to(self._torch_device)
        self.meta = meta
        self.name = mode
        self.tile = int(tile) if tile is not None else default_tile(self._torch_device)
        self.precision = check_precision(precision, self._torch_device)
        self.weights_path = str(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        self.version = f"{meta.get('version', '0')}+{digest}"  # provenance: code + weights

    @property
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))

    def restore(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        """Denoised float32 image, same shape, in the input's intensity units."""
        return self.restore_batch([image], pixel_size_um=pixel_size_um)[0]

    def restore_batch(
        self, images: list[np.ndarray], *, pixel_size_um: float | None = None
    ) -> list[np.ndarray]:
        """Frames of one shape go through the network together."""
        return map_same_shape(images, self._restore_same_shape)

    def _restore_same_shape(self, images: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        imgs = [check_image(im, self.name) for im in images]
        ranges = [percentile_range(im) for im in imgs]
        x = torch.from_numpy(
            np.stack([(im - lo) / scale for im, (lo, scale) in zip(imgs, ranges, strict=True)])
        )[:, None]
        if self.ensemble == 1:
            y = self._predict(x)
        else:  # the 8 symmetries of the square, each mapped back before averaging
            y = torch.zeros_like(x)
            for k in range(4):
                for flip in (False, True):
                    t = torch.rot90(x, k, (2, 3))
                    t = torch.flip(t, (3,)) if flip else t
                    p = self._predict(t)
                    p = torch.flip(p, (3,)) if flip else p
                    y += torch.rot90(p, -k, (2, 3))
            y /= 8
        return [
            (y[i, 0].numpy() * scale + lo).astype(np.float32)
            for i, (lo, scale) in enumerate(ranges)
        ]

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        return predict_tiled(
            self.net,
            x,
            out_channels=1,
            device=self._torch_device,
            tile=self.tile,
            multiple=2 ** (len(self.meta["channels"]) - 1),  # one halving per level
            precision=self.precision,
        )
