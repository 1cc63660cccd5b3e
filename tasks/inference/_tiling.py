"""Run a fully convolutional network over a batch of large images tile by tile, with overlap.

Shared by the segmentation and restoration U-Nets. Tiles bound memory on the CPU; on a GPU the
default tile is large enough that a 2048x2048 frame is one pass, and a batch of same-shape
frames goes through the network together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from scopeflow import ConfigurationError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
CPU_TILE = 512
GPU_TILE = 2048
OVERLAP = 32


def default_tile(device: torch.device) -> int:
    return GPU_TILE if device.type == "cuda" else CPU_TILE


def check_precision(precision: str, device: torch.device) -> Precision:
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bfloat16" and device.type != "cuda":
        raise ConfigurationError(
            "precision='bfloat16' needs a CUDA device; use precision='float32' on the CPU"
        )
    return precision  # type: ignore[return-value]


def predict_tiled(
    net: torch.nn.Module,
    x: torch.Tensor,
    *,
    out_channels: int,
    device: torch.device,
    tile: int,
    multiple: int = 8,
    overlap: int = OVERLAP,
    precision: Precision = "float32",
) -> torch.Tensor:
    """Network output (B, out_channels, H, W) float32 on the CPU for a (B, C, H, W) input.

    Each tile is padded to a multiple of ``multiple`` (the network's total pooling) and run
    with ``overlap`` pixels of context on each side; only its core is kept.
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    out = torch.empty((b, out_channels, h, w), dtype=torch.float32, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if precision == "bfloat16" and device.type == "cuda"
        else nullcontext()
    )
    x = x.to(device, non_blocking=True)
    with torch.inference_mode(), autocast:
        for r0 in range(0, h, tile):
            for c0 in range(0, w, tile):
                ra, rb = max(r0 - overlap, 0), min(r0 + tile + overlap, h)
                ca, cb = max(c0 - overlap, 0), min(c0 + tile + overlap, w)
                part = x[:, :, ra:rb, ca:cb]
                th, tw = part.shape[-2:]
                ph, pw = (-th) % multiple, (-tw) % multiple
                if ph or pw:
                    mode = "reflect" if th > ph and tw > pw else "replicate"
                    part = F.pad(part, (0, pw, 0, ph), mode=mode)
                y = net(part)[:, :, :th, :tw].float()
                rr, cc = min(r0 + tile, h), min(c0 + tile, w)
                out[:, :, r0:rr, c0:cc] = y[:, :, r0 - ra : rr - ra, c0 - ca : cc - ca]
    return out.cpu()


def map_same_shape(
    images: Sequence[np.ndarray], run: Callable[[list[np.ndarray]], Sequence[T]]
) -> list[T]:
    """``run`` once per group of same-shape images (a batch); results in the images' order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(np.shape(image), []).append(i)
    out: list[T | None] = [None] * len(images)
    for idx in groups.values():
        for i, result in zip(idx, run([images[i] for i in idx]), strict=True):
            out[i] = result
    return out  # type: ignore[return-value]
