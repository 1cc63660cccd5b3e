"""Train the virtual stain (nuclei from brightfield) and calibrate its uncertainty threshold.

The shipped weights (about a minute on 2 CPU cores)::

    python -m tasks.training.train_virtual_stain --seed 0 \\
        --out tasks/inference/weights/virtual_stain.pt

``members`` small U-Nets learn (background, interior, boundary) of the DAPI nuclei from the
simulator's brightfield frames, each from its own seed and its own draw of the frames (a
bootstrap ensemble: their disagreement is the model's uncertainty). Then held-out frames
calibrate the frame threshold: frames are sorted by uncertainty, and the threshold is the
largest at which a run that keeps the prediction for every frame at or below it and acquires
the rest finds the nuclei (detection F1 against the ground truth, pooled:
``detection_scores``) no worse than ``margin`` x ``tolerance`` under acquiring every frame (the
real DAPI frames segmented as the flow scores them): the goal's own criterion, with half its
tolerance kept for frames unlike the calibration's. Determinism:
same seed, thread count and torch build give the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.inference import (
    CANONICAL_PIXEL_UM,
    VIRTUAL_STAIN_FORMAT,
    build_unet,
    detection_scores,
    load_model,
    normalize_percentiles,
    pool_scores,
)

from ._virtual_stain_data import StainFrame, stain_frames
from .train_unet import class_targets

__all__ = ["StainConfig", "calibrate", "main", "save", "train"]

VERSION = "1.0"
_IGNORE = -1


@dataclass(frozen=True)
class StainConfig:
    seed: int = 0
    members: int = 4
    channels: tuple[int, ...] = (8, 16, 32)
    slides: int = 8
    per_slide: int = 12
    calibration_slides: int = 4
    calibration_per_slide: int = 10
    crop: int = 64
    batch: int = 8
    iterations: int = 600  # per member
    lr: float = 4e-3
    bootstrap: float = 0.8  # share of the frames each member sees
    tolerance: float = 0.01  # run F1 the prediction may lose against the real channel...
    margin: float = 0.5  # ...of which calibration spends at most this share
    reference_model: str = "classical"  # segments the real DAPI frames
    threads: int = 1  # under contention (a shared CPU) two torch threads run 10x slower


def canonical_pair(frame: StainFrame) -> tuple[np.ndarray, np.ndarray]:
    """(normalised brightfield, class target) resampled to ``CANONICAL_PIXEL_UM``."""
    import torch
    import torch.nn.functional as F

    scale = frame.pixel_size_um / CANONICAL_PIXEL_UM
    h, w = frame.labels.shape
    size = (round(h * scale), round(w * scale))
    img = torch.from_numpy(normalize_percentiles(frame.brightfield))[None, None]
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
    ri = np.clip(((np.arange(size[0]) + 0.5) / scale).astype(np.int64), 0, h - 1)
    ci = np.clip(((np.arange(size[1]) + 0.5) / scale).astype(np.int64), 0, w - 1)
    labels = frame.labels[np.ix_(ri, ci)]
    ignore = frame.ignore[np.ix_(ri, ci)]
    return img[0, 0].numpy(), class_targets(labels, ignore)


def _batch(
    data: list[tuple[np.ndarray, np.ndarray]], pool: np.ndarray, cfg: StainConfig, rng: Any
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in rng.choice(pool, cfg.batch):
        img, tgt = data[int(i)]
        r = int(rng.integers(0, img.shape[0] - cfg.crop + 1))
        c = int(rng.integers(0, img.shape[1] - cfg.crop + 1))
        img, tgt = img[r : r + cfg.crop, c : c + cfg.crop], tgt[r : r + cfg.crop, c : c + cfg.crop]
        k = int(rng.integers(4))
        img, tgt = np.rot90(img, k), np.rot90(tgt, k)
        if rng.random() < 0.5:
            img, tgt = img[:, ::-1], tgt[:, ::-1]
        img = img * rng.uniform(0.8, 1.25) + rng.uniform(-0.05, 0.05)
        xs.append(np.ascontiguousarray(img, dtype=np.float32))
        ys.append(np.ascontiguousarray(tgt))
    return np.stack(xs), np.stack(ys)


def train(cfg: StainConfig, log: bool = True) -> tuple[list[Any], dict[str, Any]]:
    """Train the ensemble from scratch; returns (networks, metadata without calibration)."""
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = [canonical_pair(f) for f in stain_frames(cfg.seed, cfg.slides, cfg.per_slide)]
    if log:
        print(f"{len(data)} frames rendered in {time.perf_counter() - t0:.0f} s", flush=True)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.0, 2.0]), ignore_index=_IGNORE)
    nets = []
    for m in range(cfg.members):
        torch.manual_seed(cfg.seed * 1000 + m)
        rng = np.random.default_rng([cfg.seed, m, 59])
        pool = rng.choice(len(data), max(1, round(cfg.bootstrap * len(data))), replace=False)
        net = build_unet(cfg.channels, 3)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=cfg.iterations, pct_start=0.2
        )
        net.train()
        running = 0.0
        for it in range(cfg.iterations):
            x_np, y_np = _batch(data, pool, cfg, rng)
            loss = loss_fn(net(torch.from_numpy(x_np)[:, None]), torch.from_numpy(y_np))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.95 * running + 0.05 * loss.item() if it else loss.item()
        if log:
            print(f"member {m}: loss {running:.4f}, {time.perf_counter() - t0:.0f} s", flush=True)
        nets.append(net.eval())
    meta: dict[str, Any] = {
        "format": VIRTUAL_STAIN_FORMAT,
        "version": VERSION,
        "canonical_pixel_um": CANONICAL_PIXEL_UM,
        "channels": list(cfg.channels),
        "classes": ["background", "interior", "boundary"],
        "input": "brightfield, percentiles 1, 99.8",
        "target": "DAPI nuclei (simulator ground truth)",
        "n_parameters": int(sum(p.numel() for net in nets for p in net.parameters())),
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "torch": str(torch.__version__),
    }
    return nets, meta


def calibrate(weights: Path, cfg: StainConfig, log: bool = True) -> dict[str, Any]:
    """The frame threshold from held-out frames (see the module); also what it gives there."""
    model = load_model("virtual-stain", weights=str(weights))
    reference = load_model(cfg.reference_model)
    rows = []
    frames = stain_frames(
        cfg.seed + 7919, cfg.calibration_slides, cfg.calibration_per_slide, with_dapi=True
    )
    for f in frames:
        labels, extras = model.segment_with_extras(f.brightfield, pixel_size_um=f.pixel_size_um)
        real = reference.segment(f.dapi, pixel_size_um=f.pixel_size_um)
        rows.append(
            (
                extras["uncertainty"],
                detection_scores(f.labels, labels, ignore=f.ignore),
                detection_scores(f.labels, real, ignore=f.ignore),
            )
        )
    rows.sort(key=lambda r: r[0])
    static = pool_scores([r[2] for r in rows]).f1
    threshold, kept = -1.0, 0
    for k in range(1, len(rows) + 1):
        if k < len(rows) and rows[k][0] == rows[k - 1][0]:
            continue  # a threshold cannot split frames of equal uncertainty
        mixed = pool_scores([r[1] for r in rows[:k]] + [r[2] for r in rows[k:]]).f1
        if mixed >= static - cfg.margin * cfg.tolerance:
            threshold, kept = rows[k - 1][0], k
    result = {
        "threshold": float(threshold),
        "calibration_frames": len(rows),
        "calibration_predicted_share": round(kept / len(rows), 4),
        "calibration_f1_predicted_all": round(pool_scores([r[1] for r in rows]).f1, 4),
        "calibration_f1_real_all": round(pool_scores([r[2] for r in rows]).f1, 4),
    }
    if log:
        print(f"calibration: {result}", flush=True)
    return result


def save(nets: list[Any], meta: dict[str, Any], out: Path) -> str:
    """Write {"members": [state_dict, ...], "meta"}; returns the file's sha256."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    members = [{k: v.detach().contiguous() for k, v in n.state_dict().items()} for n in nets]
    torch.save({"members": members, "meta": meta}, out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = StainConfig
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    p.add_argument("--iterations", type=int, default=d.iterations, help="steps per member")
    p.add_argument("--members", type=int, default=d.members)
    p.add_argument("--slides", type=int, default=d.slides)
    p.add_argument("--per-slide", type=int, default=d.per_slide)
    p.add_argument("--calibration-slides", type=int, default=d.calibration_slides)
    p.add_argument("--calibration-per-slide", type=int, default=d.calibration_per_slide)
    p.add_argument("--threads", type=int, default=d.threads)
    a = p.parse_args(argv)
    cfg = StainConfig(
        seed=a.seed,
        iterations=a.iterations,
        members=a.members,
        slides=a.slides,
        per_slide=a.per_slide,
        calibration_slides=a.calibration_slides,
        calibration_per_slide=a.calibration_per_slide,
        threads=a.threads,
    )
    started = time.perf_counter()
    nets, meta = train(cfg)
    meta["threshold"] = 1.0  # provisional: calibrate() loads the file written here
    save(nets, meta, a.out)
    meta.update(calibrate(a.out, cfg))
    meta["train_seconds"] = round(time.perf_counter() - started, 1)
    sha = save(nets, meta, a.out)
    print(
        f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB, sha256 {sha[:12]}, "
        f"{meta['n_parameters']} parameters, threshold {meta['threshold']:.3f}, "
        f"{meta['train_seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
