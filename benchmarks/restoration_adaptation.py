"""Does adapting CARE to one noisy frame (no clean image) close the gap on the real pair?

Run:  python benchmarks/restoration_adaptation.py [--out PATH] [--steps N]

Each method starts from the shipped CARE weights and fine-tunes on 16 crops of 64 px per step
(AdamW, lr 2e-4), then restores the frame; the score is the PSNR gain over the best Gaussian
blur (sigma chosen in hindsight). Nothing here sees a clean image before scoring:
  matched_noise  supervised on tissue-like and procedural fields carrying 8-bit PMT noise whose
                 slope is drawn around the frame's own estimate (``estimate_noise_gain``)
  plus_n2v       the same, plus a Noise2Void loss on crops of the frame itself (weight 1)
  bootstrap      half the crops are the frame's own CARE x8 output, re-noised with the noise
                 model estimated from the frame (a pseudo-clean of the real content)
Frames: two simulator nucleus fields and two tissue-like fields under confocal noise (clean
known), and the real FMD confocal pair. A method that helps on the synthetic frames but not
on the real one says that the real limit is not noise calibration or content adaptation.
None of these is shipped; this records why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _machine import describe_machine  # noqa: E402

from tasks.inference import (  # noqa: E402
    FMD_CONFOCAL_FISH,
    RESTORATION_DEFAULT_WEIGHTS,
    best_gaussian_blur,
    load_pair,
    load_restoration_model,
    load_restoration_weights,
    percentile_range,
    psnr,
)
from tasks.training import (  # noqa: E402
    ConfocalNoise,
    add_confocal_noise,
    estimate_noise_gain,
    n2v_mask,
    normalised_pair,
    random_confocal_noise,
    random_crop_window,
    random_flip_rotation,
    sim_pair,
    synthetic_clean,
    tissue_clean,
)

SHARED = ROOT.parent / "shared" / "data"
CROP, BATCH, LR = 64, 16, 2e-4
Crops = tuple[np.ndarray, np.ndarray]


def _normalised(noisy: np.ndarray, ref: np.ndarray) -> Crops:
    x, y = normalised_pair(noisy, ref)
    assert y is not None
    return x, y


def _crop(rng: np.random.Generator, *images: np.ndarray) -> list[np.ndarray]:
    """The same random window and symmetry of every image, as in training."""
    window = random_crop_window(images[0].shape, CROP, rng)
    return random_flip_rotation(rng, *(im[window] for im in images))


def _fine_tune(
    draw: Callable[[np.random.Generator], Crops],
    steps: int,
    frame_n2v: np.ndarray | None = None,
) -> Any:
    """Shipped CARE fine-tuned on ``draw``'s pairs (+ N2V on ``frame_n2v`` crops if given)."""
    import torch

    net, _ = load_restoration_weights(RESTORATION_DEFAULT_WEIGHTS["care"], "care")
    net.train()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    for _ in range(steps):
        xs, ys = zip(*(draw(rng) for _ in range(BATCH)), strict=True)
        x = torch.from_numpy(np.stack(xs))[:, None]
        loss = torch.mean((net(x) - torch.from_numpy(np.stack(ys))[:, None]) ** 2)
        if frame_n2v is not None:
            crops = np.stack([_crop(rng, frame_n2v)[0] for _ in range(BATCH // 2)])
            masked, mask = n2v_mask(crops, rng)
            out = net(torch.from_numpy(masked)[:, None])
            sel = torch.from_numpy(mask)[:, None]
            loss = loss + ((out - torch.from_numpy(crops)[:, None]) ** 2)[sel].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def _restore_with(net: Any, noisy: np.ndarray) -> np.ndarray:
    import torch

    from tasks.inference import predict_tiled

    lo, scale = percentile_range(noisy)
    x = torch.from_numpy(((noisy - lo) / scale).astype(np.float32))[None, None]
    with torch.no_grad():
        y = predict_tiled(net, x, out_channels=1, device=torch.device("cpu"), tile=512, multiple=4)
    return y[0, 0].numpy() * scale + lo


def _methods(noisy: np.ndarray, pool: list[np.ndarray], steps: int) -> dict[str, Any]:
    offset, slope = estimate_noise_gain(noisy)

    def matched(rng: np.random.Generator) -> Crops:
        field = pool[int(rng.integers(len(pool)))]
        noise = random_confocal_noise(rng, (0.5 * slope, 2.0 * slope))
        x, y = _normalised(*add_confocal_noise(field, noise, rng))
        a, b = _crop(rng, x, y)
        return a, b

    pseudo = load_restoration_model("care", device="cpu", ensemble=8).restore(noisy)
    pseudo = np.maximum(pseudo - offset, 0.0)
    peak = max(float(np.percentile(pseudo, 99.9)), 1e-6)
    pseudo /= peak

    def bootstrap(rng: np.random.Generator) -> Crops:
        if rng.random() >= 0.5:
            return matched(rng)
        shape = float(rng.uniform(1.5, 4.0))
        var_per_adu = slope * float(np.exp(rng.uniform(-0.2, 0.2)))
        noise = ConfocalNoise(peak, var_per_adu / (1.0 + 1.0 / shape), shape, offset, 0.5)
        x, y = _normalised(*add_confocal_noise(pseudo, noise, rng))
        a, b = _crop(rng, x, y)
        return a, b

    frame = _normalised(noisy, noisy)[0].astype(np.float32)
    return {
        "matched_noise": _fine_tune(matched, steps),
        "plus_n2v": _fine_tune(matched, steps, frame_n2v=frame),
        "bootstrap": _fine_tune(bootstrap, steps),
    }


def _frames() -> list[tuple[str, np.ndarray, np.ndarray]]:
    nuclei_noise = ConfocalNoise(150.0, 15.0, 2.6, 3.5, 0.5)
    frames = []
    for k in range(2):
        _, ref = sim_pair(20_000 + k, 384)
        field = np.maximum(ref - np.percentile(ref, 1), 0.0)
        field /= float(np.percentile(field, 99.9))
        noisy, clean = add_confocal_noise(field, nuclei_noise, np.random.default_rng(k))
        frames.append((f"sim_nuclei_{k}", noisy, clean))
    rng = np.random.default_rng(77)
    for k in range(2):
        field = tissue_clean(rng, 384)
        noisy, clean = add_confocal_noise(field, ConfocalNoise(120.0, 12.0, 2.6, 3.5, 0.5), rng)
        frames.append((f"tissue_like_{k}", noisy, clean))
    real_dir = SHARED.joinpath(*FMD_CONFOCAL_FISH)
    if real_dir.is_dir():
        noisy, clean = load_pair(real_dir)
        frames.append(("real_fmd_confocal_fish", noisy, clean))
    return frames


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/restoration_adaptation.json"
    )
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps per method")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    rng = np.random.default_rng(5)
    pool = [tissue_clean(rng, 192) for _ in range(24)]
    pool += [synthetic_clean(rng, 192) for _ in range(24)]
    shipped = load_restoration_model("care", device="cpu")
    rows: dict[str, dict[str, float]] = {}
    print(f"{'frame':24s} {'blur dB':>8s} {'care':>7s} {'matched':>8s} {'+n2v':>7s} {'boot':>7s}")
    for name, noisy, clean in _frames():
        t0 = time.perf_counter()
        blur = best_gaussian_blur(clean, noisy).psnr
        row = {"best_blur_psnr": blur, "care": psnr(clean, shipped.restore(noisy)) - blur}
        for method, net in _methods(noisy, pool, a.steps).items():
            row[method] = psnr(clean, _restore_with(net, noisy)) - blur
        row["seconds"] = time.perf_counter() - t0
        rows[name] = row
        print(
            f"{name:24s} {blur:8.2f} {row['care']:+7.2f} {row['matched_noise']:+8.2f} "
            f"{row['plus_n2v']:+7.2f} {row['bootstrap']:+7.2f}",
            flush=True,
        )
    results = {
        "benchmark": "restoration_adaptation",
        "machine": describe_machine(torch=str(torch.__version__), torch_threads="2"),
        "unit": "PSNR gain over the best Gaussian blur, dB",
        "steps": a.steps,
        "frames": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
