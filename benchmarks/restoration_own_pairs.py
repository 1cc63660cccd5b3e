"""CARE fine-tuned on the specimen's own noisy/clean pairs: what a facility's own data buys.

Run:  python benchmarks/restoration_own_pairs.py [--out PATH] [--iterations N]

The real FMD confocal pair is cut into a left and a right half. The shipped CARE weights are
fine-tuned (``train_restoration --pair``, i.e. ``RestorationTrainConfig.pairs``) on one half's
noisy/clean pair and scored on the other half, and the other way round (two folds). Scores are
PSNR gains over the best Gaussian blur of the scored half (sigma chosen in hindsight), next to
the shipped simulator-trained CARE on the same half. The scored half is never trained on; the
two halves are of one specimen, so this is the best case of training on a facility's own
registered low/high-exposure pairs, not a result of the shipped model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

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
    psnr,
)
from tasks.training.train_restoration import RestorationTrainConfig, save, train  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _fold(
    noisy: np.ndarray, clean: np.ndarray, train_cols: slice, test_cols: slice, iterations: int
) -> dict[str, float]:
    import tifffile

    shipped = load_restoration_model("care", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        low, high = Path(tmp) / "low.tif", Path(tmp) / "high.tif"
        tifffile.imwrite(low, noisy[:, train_cols])
        tifffile.imwrite(high, clean[:, train_cols])
        cfg = RestorationTrainConfig(
            pairs=((str(low), str(high)),),
            init=str(RESTORATION_DEFAULT_WEIGHTS["care"]),
            iterations=iterations,
            batch=16,
            crop=96,
            lr=2e-4,
            threads=2,
        )
        t0 = time.perf_counter()
        net, meta = train(cfg, log=False)
        seconds = time.perf_counter() - t0
        weights = Path(tmp) / "own.pt"
        save(net, meta, weights)
        tuned = load_restoration_model("care", weights=weights, device="cpu")
        n, c = noisy[:, test_cols], clean[:, test_cols]
        blur = best_gaussian_blur(c, n).psnr
        return {
            "best_blur_psnr": blur,
            "shipped_care": psnr(c, shipped.restore(n)) - blur,
            "own_pairs_care": psnr(c, tuned.restore(n)) - blur,
            "train_seconds": seconds,
        }


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/restoration_own_pairs.json"
    )
    p.add_argument("--iterations", type=int, default=800)
    a = p.parse_args(argv)
    real_dir = SHARED.joinpath(*FMD_CONFOCAL_FISH)
    if not real_dir.is_dir():
        print(f"{real_dir} is absent: nothing to measure")
        return 1
    torch.set_num_threads(2)
    noisy, clean = load_pair(real_dir)
    half = noisy.shape[1] // 2
    left, right = slice(0, half), slice(half, None)
    folds = {
        "train_left_score_right": _fold(noisy, clean, left, right, a.iterations),
        "train_right_score_left": _fold(noisy, clean, right, left, a.iterations),
    }
    print(f"{'fold':26s} {'blur dB':>8s} {'shipped':>8s} {'own pairs':>10s}")
    for name, f in folds.items():
        print(
            f"{name:26s} {f['best_blur_psnr']:8.2f} {f['shipped_care']:+8.2f} "
            f"{f['own_pairs_care']:+10.2f}"
        )
    results = {
        "benchmark": "restoration_own_pairs",
        "machine": describe_machine(torch=str(torch.__version__), torch_threads="2"),
        "unit": "PSNR gain over the best Gaussian blur of the scored half, dB",
        "iterations": a.iterations,
        "folds": folds,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
