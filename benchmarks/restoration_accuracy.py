"""Denoising accuracy (PSNR / SSIM) against the best Gaussian blur, and CPU time per frame.

Run:  python benchmarks/restoration_accuracy.py [--out PATH] [--sim N] [--n2v-iterations N]

Methods: the noisy input; the best Gaussian blur (sigma chosen per image in hindsight, 0.005 px
resolution); "care" and "n2v" (shipped weights); "*_x8": the same network averaged over the 8
flips/rotations of the frame (``ensemble=8``); on the real pair also "n2v_self": the shipped
N2V weights fine-tuned on the real NOISY image itself (self-supervised, no clean target; the
clean image is used only for scoring). No method sees a clean image or picks anything per
image; only the blur's sigma is chosen in hindsight.
Data sets:
  sim_held_out   simulator low- vs high-exposure pairs (reference: 50x the light, independent
                 noise, scaled back), 256x256, seeds 10000+ (never drawn in training)
  real_fmd_confocal_fish  REAL: ../shared/data/denoise_pairs/fmd_confocal_fish, a confocal
                 zebrafish image (single 8-bit frame vs its 50-frame average; FMD dataset)
  confocal_like_vs_noiseless / confocal_like_vs_50_frame_mean   tissue-like fields (seeds never
                 drawn in training) with 8-bit PMT noise at the real NOISY frame's estimated
                 offset and noise slope, scored against the noiseless field and against the
                 rounded mean of 50 noisy frames of it (a reference made as FMD's is): what the
                 reference's own noise does to the measured gain
PSNR uses the reference's data range; SSIM is scikit-image's with the same range.
Timing: restore() wall time on CPU (2 threads) for 512x512 and 2048x2048 frames (median).
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    best_gaussian_blur,
    load_pair,
    load_restoration_model,
    psnr,
    ssim,
)
from tasks.training import (  # noqa: E402
    ConfocalNoise,
    add_confocal_noise,
    estimate_noise_gain,
    sim_pair,
    tissue_clean,
)

SHARED = ROOT.parent / "shared" / "data"
GOAL_DB = 1.5
FMD_FRAMES_AVERAGED = 50
PMT_PULSE_SHAPE = 2.0  # Gamma shape of the pulse heights (in the training range 0.7..4)
CONFOCAL_LIKE_PEAK_ADU = 150.0


def _score(ref: np.ndarray, noisy: np.ndarray, outputs: dict[str, np.ndarray]) -> dict:
    blur = best_gaussian_blur(ref, noisy)
    row = {
        "noisy": {"psnr": psnr(ref, noisy), "ssim": ssim(ref, noisy)},
        "best_blur": {"psnr": blur.psnr, "ssim": blur.ssim, "sigma": blur.sigma},
    }
    for name, out in outputs.items():
        p = psnr(ref, out)
        row[name] = {"psnr": p, "ssim": ssim(ref, out), "gain_over_blur_db": p - blur.psnr}
    return row


def _mean_rows(rows: list[dict]) -> dict:
    out: dict = {}
    for key in rows[0]:
        out[key] = {k: float(np.mean([r[key][k] for r in rows])) for k in rows[0][key]}
    return out


def _n2v_self(noisy: np.ndarray, iterations: int) -> dict[str, np.ndarray]:
    """Fine-tune the shipped N2V weights on ``noisy`` alone, then denoise it (plain and x8)."""
    import tifffile

    from tasks.inference import RESTORATION_DEFAULT_WEIGHTS
    from tasks.training.train_restoration import RestorationTrainConfig, save, train

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "noisy.tif"
        tifffile.imwrite(src, noisy)
        cfg = RestorationTrainConfig(
            mode="n2v",
            seed=0,
            images=(str(src),),
            init=str(RESTORATION_DEFAULT_WEIGHTS["n2v"]),
            iterations=iterations,
            lr=5e-4,
        )
        net, meta = train(cfg, log=False)
        weights = Path(tmp) / "n2v_self.pt"
        save(net, meta, weights)
        return {
            f"n2v_self{suffix}": load_restoration_model(
                "n2v", weights=weights, device="cpu", ensemble=k
            ).restore(noisy)
            for suffix, k in (("", 1), ("_x8", 8))
        }


def _confocal_like(models: dict, frames: int, offset: float, slope: float) -> tuple[dict, dict]:
    """Mean scores against the noiseless field and against a 50-frame-mean reference."""
    noise = ConfocalNoise(
        peak_adu=CONFOCAL_LIKE_PEAK_ADU,
        gain_adu=slope / (1.0 + 1.0 / PMT_PULSE_SHAPE),
        shape=PMT_PULSE_SHAPE,
        offset_adu=offset,
        read_noise_adu=0.5,
    )
    vs_clean, vs_mean = [], []
    for k in range(frames):
        rng = np.random.default_rng([k, 90_001])  # training draws from [seed, 11]
        field = tissue_clean(rng, 384)
        noisy, clean = add_confocal_noise(field, noise, rng)
        more = [add_confocal_noise(field, noise, rng)[0] for _ in range(FMD_FRAMES_AVERAGED - 1)]
        mean_ref = np.rint(np.mean([noisy, *more], axis=0)).astype(np.float32)
        outputs = {n: m.restore(noisy) for n, m in models.items()}
        vs_clean.append(_score(clean, noisy, outputs))
        vs_mean.append(_score(mean_ref, noisy, outputs))
    return _mean_rows(vs_clean), _mean_rows(vs_mean)


def _time_ms(model: object, size: int, repeats: int) -> float:
    rng = np.random.default_rng(size)
    img = (100 + rng.poisson(30.0, (size, size))).astype(np.uint16)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.restore(img)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _table(results: dict) -> str:
    lines = [
        f"{'data set':30s} {'method':12s} {'PSNR dB':>8s} {'SSIM':>6s} {'vs blur':>8s}",
    ]
    for ds, row in results["datasets"].items():
        for method, m in row.items():
            gain = m.get("gain_over_blur_db")
            g = f"{gain:+8.2f}" if gain is not None else " " * 8
            extra = f" (sigma {m['sigma']:.3f})" if "sigma" in m else ""
            lines.append(f"{ds:30s} {method:12s} {m['psnr']:8.2f} {m['ssim']:6.3f} {g}{extra}")
    for k, v in results["cpu_ms_per_frame"].items():
        lines.append(f"CPU ms per frame {k}: {v:.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/restoration_accuracy.json"
    )
    p.add_argument("--sim", type=int, default=6, help="held-out simulated pairs")
    p.add_argument("--confocal-like", type=int, default=4, help="synthetic confocal frames")
    p.add_argument("--n2v-iterations", type=int, default=600, help="fine-tuning on the real image")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    models = {name: load_restoration_model(name, device="cpu") for name in ("care", "n2v")}
    models.update(
        {f"{n}_x8": load_restoration_model(n, device="cpu", ensemble=8) for n in ("care", "n2v")}
    )
    datasets: dict[str, dict] = {}
    rows = []
    for s in range(a.sim):
        noisy, ref = sim_pair(10_000 + s, 256)
        rows.append(_score(ref, noisy, {n: m.restore(noisy) for n, m in models.items()}))
    datasets["sim_held_out"] = _mean_rows(rows)
    real_dir = SHARED.joinpath(*FMD_CONFOCAL_FISH)
    skipped = {}
    if real_dir.is_dir():
        noisy, clean = load_pair(real_dir)
        outputs = {n: m.restore(noisy) for n, m in models.items()}
        t0 = time.perf_counter()
        outputs.update(_n2v_self(noisy, a.n2v_iterations))
        n2v_self_s = time.perf_counter() - t0
        datasets["real_fmd_confocal_fish"] = _score(clean, noisy, outputs)
    else:
        skipped["real_fmd_confocal_fish"] = f"{real_dir} is absent"
        n2v_self_s = None
    # the real frame's noise, estimated from its noisy image alone (a typical value without it)
    offset, slope = estimate_noise_gain(noisy) if real_dir.is_dir() else (3.0, 21.0)
    (
        datasets["confocal_like_vs_noiseless"],
        datasets["confocal_like_vs_50_frame_mean"],
    ) = _confocal_like(models, a.confocal_like, offset, slope)
    timing = {f"{size}x{size}": _time_ms(models["care"], size, a.repeats) for size in (512, 2048)}
    results = {
        "benchmark": "restoration_accuracy",
        "machine": describe_machine(torch=str(torch.__version__), torch_threads="2"),
        "goal": f"real pairs: PSNR >= best blur + {GOAL_DB} dB",
        "models": {
            n: {"version": m.version, "weights": m.weights_path, "ensemble": m.ensemble}
            for n, m in models.items()
        },
        "n2v_self": {"iterations": a.n2v_iterations, "seconds": n2v_self_s},
        "confocal_like_noise": {
            "offset_adu": offset,
            "variance_per_adu": slope,
            "pulse_shape": PMT_PULSE_SHAPE,
            "peak_adu": CONFOCAL_LIKE_PEAK_ADU,
            "frames_averaged": FMD_FRAMES_AVERAGED,
        },
        "datasets": datasets,
        "skipped": skipped,
        "cpu_ms_per_frame": timing,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
