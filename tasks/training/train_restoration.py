"""Train the restoration U-Net (seeded; minutes on a GPU, hours on 2 CPU cores).

The shipped CARE weights: one run on a lent H100 (``tasks/training/train_on_gpu.sh``, candidate
"care_a", chosen over a 4x wider net that cost 4x the CPU time per frame for +0.3 dB on the
simulator and nothing on the real pair). The noise slope range is centred on the estimate from
the real NOISY frame only (``estimate_noise_gain``); its clean frame is never read:

    N=../shared/data/denoise_pairs/fmd_confocal_fish/noisy_Confocal_FISH_3.png
    python -m tasks.training.train_restoration --mode care --device cuda --threads 1 \\
        --seed 0 --iterations 15000 --batch 16 --crop 96 --loader-workers 3 --noise-from $N \\
        --out tasks/inference/weights/care_denoise.pt
    python -m tasks.training.train_restoration --mode n2v --seed 0 --iterations 2000 \\
        --threads 1 --out tasks/inference/weights/n2v_denoise.pt
    # Noise2Void on your own noisy images (no clean targets), optionally from shipped weights:
    python -m tasks.training.train_restoration --mode n2v --image noisy.tif --init \\
        tasks/inference/weights/n2v_denoise.pt --iterations 400 --lr 5e-4 --out my_n2v.pt
    # CARE on your own registered low/high-exposure pairs of the specimen, from shipped weights:
    python -m tasks.training.train_restoration --mode care --pair low1.tif high1.tif \\
        --pair low2.tif high2.tif --init tasks/inference/weights/care_denoise.pt \\
        --iterations 800 --batch 16 --crop 96 --lr 2e-4 --out my_care.pt

care: supervised on pairs (noisy input, clean reference): simulator low- vs high-exposure
frames of the same field; confocal tissue-like images (membranes, cytoplasm, spots) with 8-bit
PMT noise (offset + Gamma pulses per Poisson photon, rounded and clipped); procedural structures
(membranes, spots, filaments, blobs) with Poisson-Gaussian camera noise (``_restoration_data``).
``--pair``: the user's own pairs instead of (or, with ``--pair-fraction``, mixed with) them.
n2v: self-supervised on the noisy images alone (the same sources' inputs, or ``--image``).
Inputs and references are normalised with the percentiles of the whole noisy image, exactly
as at inference; L2 loss; AdamW, linear warm-up then cosine decay. Determinism: same seed,
thread count, device, ``--loader-workers`` and torch build give the same
weights. On a GPU, ``--device cuda --loader-workers 8`` keeps it fed.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.inference import (
    DEFAULT_RESTORATION_CHANNELS,
    RESTORATION_DEFAULT_WEIGHTS,
    RESTORATION_PERCENTILES,
    RESTORATION_WEIGHTS_FORMAT,
    build_restoration_net,
    load_restoration_weights,
)

from ._batches import training_batches
from ._crops import normalised_pair, random_crop_window, random_flip_rotation
from ._n2v import N2V_MASK_FRACTION, N2V_RADIUS, n2v_mask
from ._restoration_data import (
    add_camera_noise,
    add_confocal_noise,
    estimate_noise_gain,
    random_confocal_noise,
    random_noise_model,
    sim_pair,
    synthetic_clean,
    tissue_clean,
)
from ._train_options import add_runtime_options
from .train_unet import save

__all__ = ["RestorationTrainConfig", "main", "save", "train"]

VERSION = "1.0"
# a training sample: (normalised input crop, normalised reference crop or None for n2v)
Sampler = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class RestorationTrainConfig:
    mode: str = "care"  # "care" (supervised) or "n2v" (self-supervised)
    seed: int = 0
    n_sim: int = 24  # simulator low/high exposure pairs
    n_synthetic: int = 96  # procedural clean images (fresh noise per draw)
    n_tissue: int = 64  # confocal tissue-like clean images (fresh 8-bit PMT noise per draw)
    sim_fraction: float = 0.4  # share of samples from simulator pairs
    tissue_fraction: float = 0.4  # share from the confocal tissue images; the rest procedural
    # mean-variance slope range (ADU) of the confocal noise; --noise-from centres it on an
    # estimate from a noisy image (estimate_noise_gain: no clean image involved)
    confocal_slope: tuple[float, float] = (4.0, 60.0)
    size: int = 192  # side of each source image
    images: tuple[str, ...] = ()  # n2v: train on these noisy images instead of the sources
    # care: the user's own (noisy, clean) image pairs, e.g. low / high exposure of one field
    pairs: tuple[tuple[str, str], ...] = ()
    pair_fraction: float = 1.0  # share of samples from ``pairs``; the rest from the sources
    init: str | None = None  # start from these weights (fine-tuning)
    crop: int = 64
    batch: int = 8
    iterations: int = 1200
    lr: float = 1e-3
    weight_decay: float = 0.0
    threads: int = 2
    device: str = "cpu"
    loader_workers: int = 0  # processes drawing batches (0: in-process, machine-independent)
    channels: tuple[int, ...] = DEFAULT_RESTORATION_CHANNELS


def make_sampler(cfg: RestorationTrainConfig, log: bool = True) -> Sampler:
    """Renders/reads the sources once; the sampler draws (input, reference) crops."""
    t0 = time.perf_counter()
    if cfg.images:
        if cfg.mode != "n2v":
            raise ValueError("--image trains without clean targets: use it with --mode n2v")
        own = [normalised_pair(_read_plane(Path(p)), None)[0] for p in cfg.images]
        small = [im.shape for im in own if min(im.shape) < cfg.crop]
        if small:
            raise ValueError(f"images {small} are smaller than the {cfg.crop}-pixel crop")

        def own_sampler(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
            im = own[int(rng.integers(len(own)))]
            return random_flip_rotation(rng, im[random_crop_window(im.shape, cfg.crop, rng)])[
                0
            ], None

        return own_sampler

    mixed = cfg.pair_fraction < 1.0
    if cfg.pairs:
        return _pair_sampler(cfg, make_sampler(replace(cfg, pairs=()), log) if mixed else None)

    rng = np.random.default_rng([cfg.seed, 11])
    sims = [normalised_pair(*sim_pair(int(rng.integers(2**31)), 256)) for _ in range(cfg.n_sim)]
    clean = [synthetic_clean(rng, cfg.size) for _ in range(cfg.n_synthetic)]
    tissue = [tissue_clean(rng, cfg.size) for _ in range(cfg.n_tissue)]
    if log:
        print(
            f"{len(sims)} simulator pairs, {len(clean)} procedural and {len(tissue)} tissue "
            f"images in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )

    def sampler(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        u = rng.random()
        if sims and u < cfg.sim_fraction:
            noisy, ref = sims[int(rng.integers(len(sims)))]
        elif tissue and u < cfg.sim_fraction + cfg.tissue_fraction:
            img = tissue[int(rng.integers(len(tissue)))]
            noise = random_confocal_noise(rng, cfg.confocal_slope)
            noisy, ref = normalised_pair(*add_confocal_noise(img, noise, rng))
        else:
            img = clean[int(rng.integers(len(clean)))]
            noisy, ref = normalised_pair(*add_camera_noise(img, random_noise_model(rng), rng))
        assert ref is not None
        win = random_crop_window(noisy.shape, cfg.crop, rng)
        x, y = random_flip_rotation(rng, noisy[win], ref[win])
        return x, (None if cfg.mode == "n2v" else y)

    return sampler


def _pair_sampler(cfg: RestorationTrainConfig, sources: Sampler | None) -> Sampler:
    """Crops of the user's (noisy, clean) pairs; a share 1 - pair_fraction from ``sources``."""
    if cfg.mode != "care":
        raise ValueError("--pair gives clean targets: use it with --mode care")
    if not 0.0 < cfg.pair_fraction <= 1.0:
        raise ValueError(f"--pair-fraction must be in (0, 1], got {cfg.pair_fraction}")
    pairs = []
    for noisy_path, clean_path in cfg.pairs:
        noisy, clean = _read_plane(Path(noisy_path)), _read_plane(Path(clean_path))
        if noisy.shape != clean.shape:
            raise ValueError(
                f"--pair {noisy_path} {clean_path}: shapes {noisy.shape} and {clean.shape} "
                "differ; give the same field at low and high exposure, registered"
            )
        if min(noisy.shape) < cfg.crop:
            raise ValueError(
                f"--pair {noisy_path}: {noisy.shape} is smaller than the {cfg.crop}-pixel crop; "
                "lower --crop"
            )
        pairs.append(normalised_pair(noisy, clean))

    def sampler(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        if sources is not None and rng.random() >= cfg.pair_fraction:
            return sources(rng)
        noisy, clean = pairs[int(rng.integers(len(pairs)))]
        assert clean is not None
        win = random_crop_window(noisy.shape, cfg.crop, rng)
        x, y = random_flip_rotation(rng, noisy[win], clean[win])
        return x, y

    return sampler


def _read_plane(path: Path) -> np.ndarray:
    """A 2D float32 image from a TIFF or PNG (the first plane of a stack)."""
    if path.suffix.lower() in {".tif", ".tiff"}:
        import tifffile

        arr = np.asarray(tifffile.imread(path))
    else:
        from skimage import io

        arr = np.asarray(io.imread(path))
    while arr.ndim > 2:
        arr = arr[0]
    return arr.astype(np.float32)


def train(cfg: RestorationTrainConfig, log: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train (from scratch or ``cfg.init``); returns (network on CPU, metadata)."""
    import torch

    if cfg.mode not in ("care", "n2v"):
        raise ValueError(f"mode must be 'care' or 'n2v', got {cfg.mode!r}")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    sampler = make_sampler(cfg, log)
    t_data = time.perf_counter() - t0
    residual = cfg.mode == "care"
    if cfg.init:
        net, init_meta = load_restoration_weights(Path(cfg.init), cfg.mode)
        if bool(init_meta["residual"]) != residual:
            raise ValueError(f"--init {cfg.init} was trained as {init_meta.get('mode')!r}")
        channels = tuple(init_meta["channels"])
        batchnorm = bool(init_meta.get("batchnorm", True))
    else:
        net, channels = build_restoration_net(cfg.channels, residual), cfg.channels
        batchnorm = False
    device = torch.device(cfg.device)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.iterations // 20)

    def lr_factor(it: int) -> float:  # linear warm-up, then cosine decay to 2% of lr
        if it < warm:
            return (it + 1) / warm
        t = (it - warm) / max(1, cfg.iterations - warm)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    def make_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(network input, target, n2v mask or None)."""
        xs, ys = zip(*(sampler(rng) for _ in range(cfg.batch)), strict=True)
        x_np = np.stack(xs)
        if cfg.mode == "n2v":
            masked, mask_np = n2v_mask(x_np, rng)
            return masked, x_np, mask_np
        return x_np, np.stack(ys), None

    net.train()
    running = 0.0
    batches = training_batches(make_batch, [cfg.seed, 31], cfg.iterations, cfg.loader_workers)
    for it, (x_np, t_np, mask_np) in enumerate(batches):
        x = torch.from_numpy(x_np)[:, None].to(device)
        target = torch.from_numpy(t_np)[:, None].to(device)
        if mask_np is not None:
            mask = torch.from_numpy(mask_np)[:, None].to(device)
            loss = ((net(x) - target) ** 2)[mask].mean()
        else:
            loss = torch.mean((net(x) - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if it else loss.item()
        if log and (it % 100 == 0 or it == cfg.iterations - 1):
            print(f"iter {it:5d} loss {running:.5f} {time.perf_counter() - t0:.0f} s", flush=True)
    net = net.cpu().eval()
    meta: dict[str, Any] = {
        "batchnorm": batchnorm,
        "format": RESTORATION_WEIGHTS_FORMAT,
        "version": VERSION,
        "mode": cfg.mode,
        "residual": residual,
        "channels": list(channels),
        "normalization": (
            f"percentiles {RESTORATION_PERCENTILES[0]}, {RESTORATION_PERCENTILES[1]} of the input"
        ),
        "n2v": {"mask_fraction": N2V_MASK_FRACTION, "radius": N2V_RADIUS},
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "data_seconds": round(t_data, 1),
        "final_loss": round(running, 6),
        "init_sha256": (
            hashlib.sha256(Path(cfg.init).read_bytes()).hexdigest() if cfg.init else None
        ),
        "torch": str(torch.__version__),
    }
    return net, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = RestorationTrainConfig
    p.add_argument("--mode", choices=["care", "n2v"], default=d.mode)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, help="where to write the .pt (default: the shipped file)")
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--sim-pairs", type=int, default=d.n_sim)
    p.add_argument("--synthetic", type=int, default=d.n_synthetic)
    p.add_argument("--image", action="append", default=[], help="n2v: a noisy image to train on")
    p.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("NOISY", "CLEAN"),
        help="care: your own registered noisy/clean pair of one field (repeatable)",
    )
    p.add_argument(
        "--pair-fraction",
        type=float,
        default=d.pair_fraction,
        help="share of training crops from --pair; the rest from the built-in sources",
    )
    p.add_argument("--init", help="start from these weights (fine-tune)")
    p.add_argument("--sim-fraction", type=float, default=d.sim_fraction)
    p.add_argument("--tissue-fraction", type=float, default=d.tissue_fraction)
    p.add_argument(
        "--noise-from",
        type=Path,
        help="centre the confocal noise slope range (x0.5..x2) on this noisy image's estimate",
    )
    add_runtime_options(p, threads=d.threads, batch=d.batch, lr=d.lr, device=d.device)
    p.add_argument("--crop", type=int, default=d.crop)
    p.add_argument("--channels", type=int, nargs="+", default=list(d.channels), help="U-Net widths")
    a = p.parse_args(argv)
    slope = d.confocal_slope
    if a.noise_from:
        offset, est = estimate_noise_gain(_read_plane(a.noise_from))
        slope = (round(0.5 * est, 3), round(2.0 * est, 3))
        print(f"{a.noise_from}: offset {offset:g}, noise variance per ADU {est:.2f}")
    cfg = RestorationTrainConfig(
        confocal_slope=slope,
        lr=a.lr,
        sim_fraction=a.sim_fraction,
        tissue_fraction=a.tissue_fraction,
        mode=a.mode,
        seed=a.seed,
        iterations=a.iterations,
        n_sim=a.sim_pairs,
        n_synthetic=a.synthetic,
        images=tuple(a.image),
        pairs=tuple((str(n), str(c)) for n, c in a.pair),
        pair_fraction=a.pair_fraction,
        init=a.init,
        threads=a.threads,
        device=a.device,
        batch=a.batch,
        crop=a.crop,
        channels=tuple(a.channels),
        loader_workers=a.loader_workers,
    )
    out = a.out or RESTORATION_DEFAULT_WEIGHTS[a.mode]
    net, meta = train(cfg)
    sha = save(net, meta, out)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {sha[:12]}, "
        f"{meta['n_parameters']} parameters, {meta['train_seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
