"""The built-in nuclei models: registry, contract, accuracy on fresh simulated frames, errors."""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import numpy as np
import pytest

from scopeflow import ConfigurationError
from tasks.inference import UNET_DEFAULT_WEIGHTS as DEFAULT_WEIGHTS
from tasks.inference import (
    SegmentationModel,
    available_models,
    instance_scores,
    load_model,
    pool_scores,
)
from tasks.training import simulated_frame
from tests.conftest import missing_real_data

pytest.importorskip("skimage", reason="scikit-image is needed by the nuclei models")
pytest.importorskip("torch", reason="torch is needed by the U-Net")

# Pooled F1 at IoU >= 0.5 on the frames below. Measured: classical 0.73, unet 0.875; a model
# that merges touching nuclei, misses dim ones or ignores pixel_size_um falls below these.
F1_MIN = {"classical": 0.65, "unet": 0.80}
# the same region at 10x and 20x (pixel size 0.65 vs 0.325 µm)
F1_MIN_ZOOM = {"classical": 0.75, "unet": 0.85}


@cache
def _model(name: str) -> SegmentationModel:
    return load_model(name, **({"device": "cpu"} if name == "unet" else {}))


@cache
def _frames() -> tuple:
    """Fresh frames (seeds never used in training): 10x, binning 1 and 2, denser sample."""
    return (
        simulated_frame(seed=31337, size=384),
        simulated_frame(seed=31338, size=384, nuclei_per_mm2=900, exposure_ms=5.0),
        simulated_frame(seed=31339, size=256, binning=2, nuclei_per_mm2=600),
    )


def test_registry_lists_and_loads_both():
    assert {"classical", "unet"} <= set(available_models())
    for name in ("classical", "unet"):
        model = _model(name)
        assert isinstance(model, SegmentationModel)
        assert model.name == name and model.version


def test_builtin_registration_is_lazy_and_idempotent():
    code = (
        "import importlib, sys\n"
        "import tasks.inference._builtin_models as b\n"
        "assert 'torch' not in sys.modules and 'skimage' not in sys.modules\n"
        "importlib.reload(b)\n"
        "from tasks.inference import available_models\n"
        "assert {'classical', 'unet'} <= set(available_models())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("name", ["classical", "unet"])
def test_output_shape_dtype(name):
    frame = _frames()[0]
    for image in (frame.image, frame.image[:200, :317].astype(np.float64)):
        labels = _model(name).segment(image, pixel_size_um=frame.pixel_size_um)
        assert labels.shape == image.shape and labels.dtype == np.int32
        ids = np.unique(labels)
        assert ids[0] == 0 and np.array_equal(ids, np.arange(ids.size))  # consecutive 1..N


@pytest.mark.parametrize("name", ["classical", "unet"])
def test_f1_on_fresh_simulated_frames(name):
    model = _model(name)
    scores = [
        instance_scores(
            f.labels, model.segment(f.image, pixel_size_um=f.pixel_size_um), ignore=f.ignore
        )
        for f in _frames()
    ]
    pooled = pool_scores(scores)
    assert pooled.tp + pooled.fn > 60  # enough nuclei for the threshold to mean something
    assert pooled.f1 >= F1_MIN[name], pooled.as_dict()


@pytest.mark.parametrize("name", ["classical", "unet"])
def test_pixel_size_rescaling_10x_and_20x(name):
    model = _model(name)
    lo = simulated_frame(
        seed=4242, size=256, objective="10x", x_um=1000.0, y_um=1000.0, nuclei_per_mm2=800
    )
    hi = simulated_frame(
        seed=4242, size=512, objective="20x", x_um=1000.0, y_um=1000.0, nuclei_per_mm2=800
    )
    areas = []
    for f in (lo, hi):
        pred = model.segment(f.image, pixel_size_um=f.pixel_size_um)
        s = instance_scores(f.labels, pred, ignore=f.ignore)
        assert s.f1 >= F1_MIN_ZOOM[name], (f.settings.objective, s.as_dict())
        areas.append(np.mean(np.bincount(pred.ravel())[1:]) * f.pixel_size_um**2)
    assert 0.75 < areas[0] / areas[1] < 1.33, areas  # same nuclei, same size in µm²


@pytest.mark.parametrize("name", ["classical", "unet"])
@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 64, 64), np.uint16), "2D"),
        (np.zeros((0, 0), np.uint16), "empty"),
        (np.full((32, 32), np.nan), "NaN"),
    ],
)
def test_bad_input_raises_value_error(name, image, match):
    with pytest.raises(ValueError, match=match):
        _model(name).segment(image, pixel_size_um=0.65)


@pytest.mark.parametrize("name", ["classical", "unet"])
def test_bad_pixel_size_and_blank_frame(name):
    with pytest.raises(ValueError, match="pixel_size_um"):
        _model(name).segment(np.ones((32, 32)), pixel_size_um=0.0)
    blank = np.full((64, 64), 100, np.uint16)
    assert _model(name).segment(blank, pixel_size_um=0.65).max() == 0


def test_weights_file_is_small():
    assert DEFAULT_WEIGHTS.is_file(), f"{DEFAULT_WEIGHTS} missing: run tasks.inference.train_unet"
    assert DEFAULT_WEIGHTS.stat().st_size < 3 * 1024 * 1024


def test_missing_weights_path_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "unet.pt"
    with pytest.raises(ConfigurationError, match=r"nope/unet\.pt") as err:
        load_model("unet", weights=missing)
    assert "train_unet" in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match=r"bad\.pt"):
        load_model("unet", weights=str(bad))


def test_explicit_weights_path_loads(tmp_path):
    model = load_model("unet", weights=DEFAULT_WEIGHTS, device="cpu")
    assert model.device == "cpu"
    assert 100_000 <= model.n_parameters <= 500_000


def test_labels_align_with_rendered_nuclei():
    """Rasterised truth sits on the rendered nuclei: best overlap at zero shift."""
    f = simulated_frame(
        seed=5, size=256, exposure_ms=200.0, intensity_pct=100.0, nuclei_per_mm2=800
    )
    img = f.image.astype(np.float64)
    bg, fg = np.median(img[f.labels == 0]), np.median(img[f.labels > 0])
    bright = img > bg + 0.5 * (fg - bg)

    def iou(mask: np.ndarray) -> float:
        return (bright & mask).sum() / (bright | mask).sum()

    at_zero = iou(f.labels > 0)
    assert at_zero > 0.85
    for shift in ((1, 0), (0, 1), (-1, 0), (0, -1)):
        assert iou(np.roll(f.labels > 0, shift, axis=(0, 1))) < at_zero - 0.03


def test_metrics_basic():
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8], truth[10:18, 10:18] = 1, 2
    assert instance_scores(truth, truth).f1 == 1.0
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 5  # one hit, one miss
    pred[0:2, 15:20] = 7  # one false positive
    s = instance_scores(truth, pred)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1) and s.mean_matched_iou == 1.0
    shifted = np.roll(truth, 3, axis=1)  # IoU 0.33 and 0.45: no match at 0.5
    assert instance_scores(truth, shifted).tp == 0
    with pytest.raises(ValueError, match="2D"):
        instance_scores(truth[None], truth[None])


def test_real_fluorescence_nuclei():
    """REAL data (DSB 2018 image shipped in the stardist wheel, not in this repo)."""
    from tasks.training import load_stardist_dsb_example

    try:
        image, truth, _src = load_stardist_dsb_example()
    except FileNotFoundError as exc:
        missing_real_data(str(exc))
    s = instance_scores(truth, _model("unet").segment(image, pixel_size_um=0.5))
    # measured 0.787 (classical 0.707; earlier CPU-trained U-Net 0.795); the goal is 0.80: this
    # guards against regressions
    assert s.f1 >= 0.75, s.as_dict()


def test_classical_working_resolution_bins_large_frames_and_keeps_accuracy():
    """working_radius_px bins a frame whose nuclei span many pixels: the labels come back at
    full size and match the ground truth about as well as full-resolution segmentation."""
    frames = _frames()[:2]
    binned = load_model("classical", working_radius_px=4)
    assert binned._binning(0.65, (384, 384)) == 2
    assert binned._binning(1.3, (384, 384)) == 1
    full_scores, binned_scores = [], []
    for f in frames:
        labels = binned.segment(f.image, pixel_size_um=f.pixel_size_um)
        assert labels.shape == f.image.shape and labels.dtype == np.int32
        binned_scores.append(instance_scores(f.labels, labels, ignore=f.ignore))
        full = _model("classical").segment(f.image, pixel_size_um=f.pixel_size_um)
        full_scores.append(instance_scores(f.labels, full, ignore=f.ignore))
    assert pool_scores(binned_scores).f1 >= pool_scores(full_scores).f1 - 0.05
    with pytest.raises(ValueError, match="working_radius_px must be >= 2"):
        load_model("classical", working_radius_px=1)
