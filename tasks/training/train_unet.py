"""Train the nuclei U-Net on simulated DAPI frames (seeded; minutes on a GPU or 2 CPU cores).

The shipped weights (``tasks/training/train_on_gpu.sh`` on a lent H100, 5 minutes)::

    python -m tasks.training.train_unet --device cuda --threads 1 --seed 0 --batch 16 \\
        --frames 160 --loader-workers 2 --iterations 15000 \\
        --out tasks/inference/weights/unet_nuclei.pt

On a CPU, ``--seed 0 --out my_unet.pt`` (1000 steps of 8, ~5 min on 2 cores) gives the earlier,
less robust model (README, "Segmentation accuracy").

Frames come from the simulator at varied objectives, binning, exposure, defocus and density
(``_training_data``); each is resampled to the canonical pixel size with scale jitter, then
random crops get flips/rotations and intensity augmentations (gamma, gain/offset, background
ramps, blur, noise) so the network does not learn the simulator's exact photometry.
Determinism: same seed, thread count, device, ``--loader-workers`` and torch build give the
same weights. On a GPU, ``--device cuda --loader-workers 8`` keeps it fed.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.inference import (
    CANONICAL_PIXEL_UM,
    UNET_DEFAULT_CHANNELS,
    UNET_WEIGHTS_FORMAT,
    build_unet,
    normalize_percentiles,
)

from ._batches import training_batches
from ._train_options import add_runtime_options
from ._training_data import random_settings, render_frame

__all__ = ["TrainConfig", "main", "make_training_set", "train"]

VERSION = "1.0"
_IGNORE = -1


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    n_frames: int = 96
    fov_um: float = 200.0  # field of view of each training frame
    scales_per_frame: int = 3  # resampled copies per frame, each with its own scale jitter
    scale_jitter: tuple[float, float] = (0.7, 1.45)  # canonical nucleus size x this
    max_stretch: float = 1.6  # anisotropic scaling up to this ratio...
    stretch_prob: float = 0.6  # ...for this fraction of the copies
    restyle_prob: float = 0.4  # crops redrawn from their labels in a random style
    crop: int = 96
    batch: int = 8
    iterations: int = 1000
    lr: float = 3e-3
    weight_decay: float = 1e-4
    boundary_weight: float = 3.0
    threads: int = 2
    device: str = "cpu"
    loader_workers: int = 0  # processes drawing batches (0: in-process, machine-independent)
    channels: tuple[int, ...] = UNET_DEFAULT_CHANNELS


def make_training_set(cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(normalised image, class target, instance labels) at the canonical pixel size, jittered."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng([cfg.seed, 17])
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(cfg.n_frames):
        s = random_settings(rng)
        px = _pixel_size(s.objective, s.binning)
        frame = render_frame(replace(s, size=max(64, math.ceil(cfg.fov_um / px))))
        img = frame.image.astype(np.float32)
        for _ in range(cfg.scales_per_frame):
            j = math.exp(rng.uniform(*np.log(cfg.scale_jitter)))
            # anisotropic stretch: real nuclei are often more elongated than the simulated ones
            stretch = math.exp(rng.uniform(-1, 1) * math.log(cfg.max_stretch))
            stretch = stretch if rng.random() < cfg.stretch_prob else 1.0
            sr = px / (CANONICAL_PIXEL_UM / j) * math.sqrt(stretch)  # j > 1: nuclei look bigger
            sc = px / (CANONICAL_PIXEL_UM / j) / math.sqrt(stretch)
            h, w = img.shape
            size = (max(cfg.crop, round(h * sr)), max(cfg.crop, round(w * sc)))
            x = F.interpolate(
                torch.from_numpy(img)[None, None],
                size=size,
                mode="bilinear",
                align_corners=False,
                antialias=min(sr, sc) < 1,
            )[0, 0].numpy()
            ri = (np.arange(size[0]) + 0.5) / sr - 0.5
            ci = (np.arange(size[1]) + 0.5) / sc - 0.5
            ri = np.clip(np.rint(ri), 0, h - 1).astype(np.int64)
            ci = np.clip(np.rint(ci), 0, w - 1).astype(np.int64)
            labels = frame.labels[np.ix_(ri, ci)]
            ignore = frame.ignore[np.ix_(ri, ci)]
            out.append((normalize_percentiles(x), class_targets(labels, ignore), labels))
    return out


def class_targets(labels: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """int64 map: 0 background, 1 interior, 2 boundary (inner edge of each object), -1 ignore."""
    from skimage.segmentation import find_boundaries

    target = (labels > 0).astype(np.int64)
    target[find_boundaries(labels, mode="inner") & (labels > 0)] = 2
    target[ignore] = _IGNORE
    return target


def _pixel_size(objective: str, binning: int) -> float:
    from tasks.hardware.sim import SimulatorConfig

    return SimulatorConfig().pixel_size_um(objective, binning)


def _augment(
    img: np.ndarray, tgt: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Geometric (flips, 90° turns) then photometric augmentation of one normalised crop."""
    from scipy import ndimage as ndi

    k = int(rng.integers(4))
    img, tgt = np.rot90(img, k), np.rot90(tgt, k)
    if rng.random() < 0.5:
        img, tgt = img[:, ::-1], tgt[:, ::-1]
    img = np.ascontiguousarray(img, dtype=np.float32)
    tgt = np.ascontiguousarray(tgt)
    if rng.random() < 0.3:
        img = ndi.gaussian_filter(img, rng.uniform(0.3, 1.5))
    img = np.clip(img, 0.0, None) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.3:  # uneven illumination / out-of-focus haze
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] / max(img.shape)
        a, b = rng.normal(0, 1, 2)
        img = img + rng.uniform(0.0, 0.25) * (a * yy + b * xx - (a + b) / 2)
    img = img * rng.uniform(0.6, 1.5) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.6:
        img = img + rng.normal(0.0, rng.uniform(0.0, 0.08), img.shape)
    return img.astype(np.float32), tgt


def _crop(
    img: np.ndarray, tgt: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = img.shape
    r = int(rng.integers(0, h - size + 1))
    c = int(rng.integers(0, w - size + 1))
    win = (slice(r, r + size), slice(c, c + size))
    return img[win], tgt[win], labels[win]


def _restyle(tgt: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A differently styled image of the same nuclei (domain randomisation).

    The simulator adds touching nuclei up (bright overlaps) and draws them with its own
    texture; real nuclei often meet at a dark seam, with other brightness spreads, textures
    and edge softness. Per-nucleus brightness, darkened rims/seams, smooth mottling and blur
    are drawn at random here, so the network cannot rely on the simulator's style.
    """
    from scipy import ndimage as ndi

    bright = rng.uniform(0.2, 1.0, int(labels.max()) + 1).astype(np.float32)
    bright[0] = 0.0
    img = bright[labels]
    img[tgt == _IGNORE] = rng.uniform(0.05, 0.4)  # out-of-focus haze
    img = np.where(tgt == 2, img * rng.uniform(0.3, 0.95), img)
    mottle = ndi.gaussian_filter(rng.standard_normal(img.shape), rng.uniform(0.7, 2.5))
    img = img * (1.0 + rng.uniform(0.0, 0.35) * mottle / (mottle.std() + 1e-6))
    img = ndi.gaussian_filter(img.astype(np.float32), rng.uniform(0.4, 1.5))
    img = img + rng.uniform(0.0, 0.15)
    return (img / max(float(np.percentile(img, 99.8)), 1e-3)).astype(np.float32)


def train(cfg: TrainConfig, log: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train from scratch; returns (network, metadata)."""
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = make_training_set(cfg)
    t_data = time.perf_counter() - t0
    if log:
        print(f"{len(data)} training images rendered in {t_data:.0f} s", flush=True)
    device = torch.device(cfg.device)
    net = build_unet(cfg.channels).to(device)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.iterations, pct_start=0.15
    )
    weight = torch.tensor([1.0, 1.0, cfg.boundary_weight], device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=_IGNORE)

    def make_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i in rng.integers(0, len(data), cfg.batch):
            img, tgt, labels = _crop(*data[int(i)], cfg.crop, rng)
            if rng.random() < cfg.restyle_prob:
                img = _restyle(tgt, labels, rng)
            img, tgt = _augment(img, tgt, rng)
            xs.append(img)
            ys.append(tgt)
        return np.stack(xs), np.stack(ys)

    net.train()
    running = 0.0
    batches = training_batches(make_batch, [cfg.seed, 31], cfg.iterations, cfg.loader_workers)
    for it, (x_np, y_np) in enumerate(batches):
        x = torch.from_numpy(x_np)[:, None].to(device)
        y = torch.from_numpy(y_np).to(device)
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.95 * running + 0.05 * loss.item() if it else loss.item()
        if log and (it % 100 == 0 or it == cfg.iterations - 1):
            print(f"iter {it:5d} loss {running:.4f} {time.perf_counter() - t0:.0f} s", flush=True)
    net = net.cpu().eval()
    meta: dict[str, Any] = {
        "format": UNET_WEIGHTS_FORMAT,
        "version": VERSION,
        "canonical_pixel_um": CANONICAL_PIXEL_UM,
        "channels": list(cfg.channels),
        "n_classes": 3,
        "classes": ["background", "interior", "boundary"],
        "normalization": "percentiles 1, 99.8",
        "n_parameters": int(n_params),
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "data_seconds": round(t_data, 1),
        "final_loss": round(running, 5),
        "torch": str(torch.__version__),
    }
    return net, meta


def save(net: Any, meta: dict[str, Any], out: Path) -> str:
    """Write {"state_dict", "meta"} (float32 tensors, plain-type metadata); returns sha256."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    p.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    p.add_argument("--frames", type=int, default=TrainConfig.n_frames)
    d = TrainConfig
    add_runtime_options(p, threads=d.threads, batch=d.batch, lr=d.lr, device=d.device)
    a = p.parse_args(argv)
    cfg = TrainConfig(
        seed=a.seed,
        iterations=a.iterations,
        n_frames=a.frames,
        threads=a.threads,
        batch=a.batch,
        lr=a.lr,
        device=a.device,
        loader_workers=a.loader_workers,
    )
    net, meta = train(cfg)
    sha = save(net, meta, a.out)
    print(
        f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB, sha256 {sha[:12]}, "
        f"{meta['n_parameters']} parameters, {meta['train_seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
