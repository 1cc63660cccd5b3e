"""Batched and tiled network passes (shared by the U-Net and CARE), precision options, training
batches from worker processes, and the same models on CUDA when a GPU is present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scopeflow import ConfigurationError
from tasks.inference import load_model, load_restoration_model, predict_tiled
from tasks.training import simulated_frame

torch = pytest.importorskip("torch")


def test_tiles_write_every_pixel_at_the_right_place() -> None:
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 150, 170)).astype("f4"))
    out = predict_tiled(torch.nn.Identity(), x, out_channels=1, device=torch.device("cpu"), tile=64)
    assert torch.equal(out, x)  # an identity network: any misplaced or unwritten tile shows


def test_unet_batch_equals_frame_by_frame_and_keeps_order() -> None:
    model = load_model("unet", device="cpu")
    frames = [simulated_frame(seed=s, size=160).image for s in (1, 2)]
    odd = simulated_frame(seed=3, size=128).image
    single = [model.predict_probabilities(f, pixel_size_um=0.65) for f in frames]
    batch = model.predict_probabilities_batch(frames, pixel_size_um=0.65)
    for a, b in zip(single, batch, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    labels = model.segment_batch([frames[0], odd, frames[1]], pixel_size_um=0.65)
    assert [lab.shape for lab in labels] == [(160, 160), (128, 128), (160, 160)]
    assert np.array_equal(labels[1], model.segment(odd, pixel_size_um=0.65))
    with pytest.raises(ValueError, match="one shape"):
        model.predict_probabilities_batch([frames[0], odd], pixel_size_um=0.65)


def test_care_batch_equals_frame_by_frame() -> None:
    care = load_restoration_model("care", device="cpu")
    rng = np.random.default_rng(2)
    frames = [rng.poisson(lam, (96, 112)).astype(np.float32) for lam in (5.0, 40.0)]
    batch = care.restore_batch([*frames, frames[0][:64, :64]])
    for f, b in zip(frames, batch, strict=False):
        np.testing.assert_allclose(care.restore(f), b, rtol=1e-5, atol=1e-4)
    assert batch[2].shape == (64, 64)


def test_precision_and_tile_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="needs a CUDA device"):
        load_model("unet", device="cpu", precision="bfloat16")
    with pytest.raises(ConfigurationError, match="precision must be one of"):
        load_restoration_model("care", device="cpu", precision="float16")
    with pytest.raises(ConfigurationError, match="at least 64"):
        load_model("unet", device="cpu", tile=16)
    assert load_model("unet", device="cpu").tile == 512


_WORKER_BATCHES = """
import json, sys
import numpy as np
from tasks.training import training_batches

def draw(rng):
    return (rng.integers(0, 1000, 3),)

out = [[np.asarray(b[0]).tolist() for b in training_batches(draw, [5, 31], n, workers=w)]
       for n, w in ((6, 0), (7, 2), (7, 2))]
json.dump(out, sys.stdout)
"""


def test_training_batches_in_process_and_from_workers() -> None:
    # worker processes are forked: run it as the trainers run, in a fresh process of its own
    # (forking this test process, with its servers' threads, is not what the trainers do)
    done = subprocess.run(
        [sys.executable, "-c", _WORKER_BATCHES],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    inline, first, again = json.loads(done.stdout)
    rng = np.random.default_rng([5, 31])
    assert inline == [rng.integers(0, 1000, 3).tolist() for _ in range(6)]
    assert len(first) == 7 and first == again  # reproducible for the same worker count
    w0, w1 = np.random.default_rng([5, 31, 0]), np.random.default_rng([5, 31, 1])
    expected = [(w0 if i % 2 == 0 else w1).integers(0, 1000, 3).tolist() for i in range(7)]
    assert first == expected  # round-robin over the workers' own streams


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here; benchmarks/gpu.py runs these checks on a GPU machine "
    "(last results: benchmarks/results/gpu.json)",
)
def test_cuda_matches_cpu() -> None:
    frame = simulated_frame(seed=11, size=512)
    cpu = load_model("unet", device="cpu").predict_probabilities(frame.image, pixel_size_um=0.65)
    gpu = load_model("unet", device="cuda").predict_probabilities(frame.image, pixel_size_um=0.65)
    assert np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu) < 1e-3
