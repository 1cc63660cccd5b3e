"""Physics of the simulated microscope: what the camera sees must follow the ground truth."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import useq
from scipy import ndimage

from scopeflow import ConfigurationError, HardwareError, MicroManagerNotInstalled
from tasks.hardware.sim import (  # private: white-box test of the Micro-Manager loader
    SimClock,
    SimulatorConfig,
    VirtualSample,
    _micromanager,  # noqa: PLC2701
    build_simulated_core,
    load_micromanager_core,
)

SMALL = {"width": 256, "height": 256, "time_scale": 0.0}


def _core(**overrides):
    return build_simulated_core(SimulatorConfig(**{**SMALL, **overrides}))


def _snap(core) -> np.ndarray:
    core.snapImage()
    return core.getImage().copy()


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(dy, dx) such that b ~ a shifted by (dy, dx), from the FFT cross-correlation peak."""
    fa = np.fft.rfft2(a - a.mean())
    fb = np.fft.rfft2(b - b.mean())
    xc = np.fft.irfft2(fb * np.conj(fa), s=a.shape)
    dy, dx = np.unravel_index(np.argmax(xc), xc.shape)
    h, w = a.shape
    return int((dy + h // 2) % h - h // 2), int((dx + w // 2) % w - w // 2)


def _sharpness(img: np.ndarray) -> float:
    """Variance of the Laplacian after a 1-px smoothing that tames pixel noise."""
    return float(ndimage.laplace(ndimage.gaussian_filter(img.astype(np.float64), 1.0)).var())


# --------------------------------------------------------------------------- config & core


def test_config_defaults_and_pixel_sizes():
    cfg = SimulatorConfig()
    assert (cfg.width, cfg.height) == (2048, 2048)
    assert [cfg.pixel_size_um(o) for o in ("10x", "20x", "40x")] == [0.65, 0.325, 0.1625]
    assert cfg.pixel_size_um("10x", binning=2) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="nucleus_radius_um"):
        SimulatorConfig(nucleus_radius_um=(8.0, 4.0))


def test_core_default_state_and_pixel_size_follows_objective_and_binning():
    core, _ = _core(flip_x=True)
    assert core.getCurrentConfig("Channel") == "DAPI"
    assert core.getCurrentConfig("Objective") == "10x"
    assert core.getExposure() == 10.0
    assert float(core.getProperty("Illumination", "Intensity")) == 50.0
    assert core.getAutoShutter()
    assert core.getPixelSizeUm() == pytest.approx(0.65)
    assert core.getPixelSizeAffine()[0] == pytest.approx(-0.65)  # flip_x
    assert core.getPixelSizeAffine()[4] == pytest.approx(0.65)
    core.setConfig("Objective", "40x")
    assert core.getPixelSizeUm() == pytest.approx(0.1625)
    core.setProperty("Camera", "Binning", 2)
    assert core.getPixelSizeUm() == pytest.approx(0.325)
    assert (core.getImageWidth(), core.getImageHeight()) == (128, 128)
    assert _snap(core).shape == (128, 128)


def test_stage_travel_limits_raise_hardware_error():
    core, _ = _core()
    core.setXYPosition(100.0, 200.0)
    assert core.getXYPosition() == pytest.approx((100.0, 200.0))
    with pytest.raises(HardwareError, match="beyond the stage travel"):
        core.setXYPosition(-5.0, 200.0)
    with pytest.raises(HardwareError, match="beyond the stage travel"):
        core.setXYPosition(100.0, 10_001.0)
    assert core.getXYPosition() == pytest.approx((100.0, 200.0))
    with pytest.raises(HardwareError, match="Z travel"):
        core.setPosition(5000.0)


# --------------------------------------------------------------------------- image physics


def test_same_seed_same_image_in_fresh_cores_and_other_seed_differs():
    a, _ = _core(seed=7)
    b, _ = _core(seed=7)
    c, _ = _core(seed=8)
    img_a, img_b, img_c = _snap(a), _snap(b), _snap(c)
    assert img_a.dtype == np.uint16
    np.testing.assert_array_equal(img_a, img_b)
    assert not np.array_equal(img_a, img_c)


def test_same_image_in_a_fresh_process():
    code = (
        "import hashlib;"
        "from tasks.hardware.sim import SimulatorConfig, build_simulated_core;"
        "core, sim = build_simulated_core(SimulatorConfig(width=256, height=256, time_scale=0,"
        " seed=7));"
        "core.snapImage(); print(hashlib.sha256(core.getImage().tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=True,
        timeout=120,
    )
    core, _ = _core(seed=7)
    assert out.stdout.strip() == hashlib.sha256(_snap(core).tobytes()).hexdigest()


@pytest.mark.parametrize("flip_x", [False, True])
def test_moving_stage_by_n_pixels_shifts_image_by_n_pixels(flip_x):
    core, _ = _core(width=512, height=512, flip_x=flip_x)
    core.setXYPosition(3000.0, 3000.0)
    a = _snap(core).astype(np.float64)
    n_x, n_y = 37, -21
    px = core.getPixelSizeUm()
    core.setXYPosition(3000.0 + n_x * px, 3000.0 + n_y * px)
    b = _snap(core).astype(np.float64)
    dy, dx = _shift(a, b)
    # the sample moves against the stage in the image; flip_x mirrors the column direction
    assert (dy, dx) == (-n_y, n_x if flip_x else -n_x)


def test_image_content_depends_on_stage_position():
    core, _ = _core()
    core.setXYPosition(2000.0, 2000.0)
    a = _snap(core).astype(np.float64)
    core.setXYPosition(7000.0, 7000.0)
    b = _snap(core).astype(np.float64)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.2


def test_defocus_lowers_sharpness():
    core, sim = _core(width=512, height=512)
    core.setConfig("Objective", "20x")
    bright = {"channel": "DAPI", "exposure_ms": 100.0, "intensity_pct": 100.0}
    sharp = [_sharpness(sim.render(z_um=z, **bright)) for z in (0.0, 3.0, 10.0)]
    assert sharp[0] > 2 * sharp[1] > 4 * sharp[2]
    peak = [np.percentile(sim.render(z_um=z, **bright), 99.9) for z in (0.0, 10.0)]
    assert peak[1] < peak[0]


def _blob_area(img: np.ndarray, row: float, col: float, r_px: float) -> int:
    """Pixels of the blob under (row, col), thresholded halfway between background and peak."""
    bg = np.median(img)
    half = int(2 * r_px)
    r, c = round(row), round(col)
    crop = img[r - half : r + half + 1, c - half : c + half + 1]
    labels, _ = ndimage.label(crop > bg + 0.5 * (np.percentile(crop, 99) - bg))
    centre = labels[half, half]
    return int((labels == centre).sum()) if centre else 0


def test_objective_change_scales_nuclei_by_magnification():
    core, sim = _core(width=512, height=512, read_noise_e=0.5, seed=5)
    core.setXYPosition(5000.0, 5000.0)
    in_view = sim.truth(sim.field_of_view(replace(sim.state(), objective="20x")))
    ok = (in_view.phase == 0) & (np.abs(in_view.z_um) < 1.5)
    areas = {}
    for obj in ("10x", "20x"):
        state = replace(sim.state(), objective=obj)
        img = sim.render(objective=obj, exposure_ms=100.0, intensity_pct=100.0).astype(float)
        col, row = sim.stage_to_pixel(in_view.x_um, in_view.y_um, state)
        r_px = in_view.radius_um / sim.config.pixel_size_um(obj)
        areas[obj] = np.array(
            [
                _blob_area(img, r, c, rp) if 2.5 * rp < min(r, c, 511 - r, 511 - c) else 0
                for r, c, rp in zip(row, col, r_px, strict=True)
            ]
        )
    good = ok & (areas["10x"] > 10) & (areas["20x"] > 40)
    assert good.sum() >= 3
    ratio = np.sqrt(areas["20x"][good] / areas["10x"][good])
    assert np.median(ratio) == pytest.approx(2.0, rel=0.1)


def test_exposure_and_intensity_scale_signal_above_offset():
    core, sim = _core(width=512, height=512)
    offset = sim.config.camera_offset_adu

    def mean_signal(**kw) -> float:
        return float(np.mean([sim.render(**kw).mean() for _ in range(3)]) - offset)

    base = mean_signal(exposure_ms=10.0, intensity_pct=50.0)
    assert mean_signal(exposure_ms=20.0, intensity_pct=50.0) / base == pytest.approx(2.0, rel=0.03)
    assert mean_signal(exposure_ms=10.0, intensity_pct=25.0) / base == pytest.approx(0.5, rel=0.03)
    assert mean_signal(exposure_ms=10.0, intensity_pct=0.0) == pytest.approx(0.0, abs=0.5)
    # the same through the core's devices
    core.setExposure(40.0)
    core.setProperty("Illumination", "Intensity", 25.0)
    via_core = np.mean([_snap(core).mean() for _ in range(3)]) - offset
    assert via_core / base == pytest.approx(2.0, rel=0.05)


def test_noise_variance_grows_with_signal_and_matches_camera_model():
    # an empty patch of slide: pure background
    _, sim = _core(nuclei_per_mm2=0.0)
    cfg = sim.config
    variances = []
    for exposure in (10.0, 100.0, 1000.0):
        img = sim.render(exposure_ms=exposure, intensity_pct=100.0).astype(np.float64)
        bg_e = cfg.background_e_per_ms["DAPI"] * exposure
        expected = (bg_e + cfg.read_noise_e**2) / cfg.camera_gain_e_per_adu**2
        assert img.mean() == pytest.approx(
            cfg.camera_offset_adu + bg_e / cfg.camera_gain_e_per_adu, rel=0.01
        )
        assert img.var() == pytest.approx(expected, rel=0.1)
        variances.append(img.var())
    assert variances[0] < variances[1] < variances[2]


def test_shot_noise_of_cells_grows_with_their_signal():
    core, sim = _core(width=512, height=512)
    core.setConfig("Objective", "20x")
    a = sim.render(exposure_ms=50.0).astype(np.float64)
    b = sim.render(exposure_ms=50.0).astype(np.float64)
    mean, diff = (a + b) / 2, a - b
    bg = np.median(mean)
    bright = mean > bg + 0.6 * (np.percentile(mean, 99.5) - bg)
    dark = mean < bg + 3
    assert bright.sum() > 200
    # var(a - b) = 2 var(pixel); Poisson: var ~ signal / gain (+ background and read noise)
    gain = sim.config.camera_gain_e_per_adu
    signal = mean[bright] - sim.config.camera_offset_adu
    expected = 2 * signal.mean() / gain
    assert diff[bright].var() == pytest.approx(expected, rel=0.2)
    assert diff[bright].var() > 5 * diff[dark].var()


def test_dark_frame_when_shutter_closed_and_no_autoshutter():
    core, sim = _core()
    core.setAutoShutter(False)
    core.setShutterOpen(False)
    img = _snap(core).astype(np.float64)
    cfg = sim.config
    assert img.mean() == pytest.approx(cfg.camera_offset_adu, abs=0.5)
    assert img.std() == pytest.approx(cfg.read_noise_e / cfg.camera_gain_e_per_adu, rel=0.1)
    assert sim.truth(sim.field_of_view()).dose_dapi.max(initial=0.0) == 0.0
    core.setShutterOpen(True)
    assert _snap(core).mean() > img.mean() + 1


def test_channels_look_different():
    core, sim = _core(width=512, height=512)
    means = {}
    for ch in ("BF", "DAPI", "GFP"):
        core.setConfig("Channel", ch)
        means[ch] = _snap(core).mean()
    assert means["BF"] > 5 * means["DAPI"]  # brightfield: bright background
    dapi = sim.render(channel="DAPI").astype(float)
    gfp = sim.render(channel="GFP").astype(float)
    # cytoplasm covers more area than nuclei
    assert (gfp > np.median(gfp) + 20).sum() > 1.5 * (dapi > np.median(dapi) + 20).sum()


# --------------------------------------------------------------------------- ground truth


def test_truth_agrees_with_image_through_pixel_affine():
    core, sim = _core(width=512, height=512, flip_x=True, read_noise_e=0.5, seed=3)
    core.setXYPosition(4000.0, 6000.0)
    img = sim.render(exposure_ms=100.0, intensity_pct=100.0).astype(np.float64)
    bg = np.median(img)
    labels, n = ndimage.label(img > bg + 0.35 * (np.percentile(img, 99.5) - bg))
    centroids = np.array(ndimage.center_of_mass(img - bg, labels, range(1, n + 1)))  # (row, col)

    # stage -> pixel through the core's own pixel affine (pixel centre at (W-1)/2, (H-1)/2)
    a, b, _, c, d, _ = core.getPixelSizeAffine()
    to_stage = np.array([[a, b], [c, d]])
    xs, ys = core.getXYPosition()
    truth = sim.truth(sim.field_of_view())
    rel = np.stack([truth.x_um - xs, truth.y_um - ys])
    col, row = np.linalg.solve(to_stage, rel) + np.array([[255.5], [255.5]])

    ok = (np.abs(truth.z_um - core.getPosition()) < 1.5) & (truth.phase == 0)
    ok &= (col > 20) & (col < 491) & (row > 20) & (row < 491)
    dist = np.hypot(truth.x_um[:, None] - truth.x_um, truth.y_um[:, None] - truth.y_um)
    gap = dist - truth.radius_um[:, None] - truth.radius_um[None, :]
    np.fill_diagonal(gap, np.inf)
    ok &= gap.min(axis=1) > 4.0  # not touching another nucleus
    assert ok.sum() >= 10
    hits = 0
    for r, cc in zip(row[ok], col[ok], strict=True):
        err = np.hypot(centroids[:, 0] - r, centroids[:, 1] - cc).min()
        hits += err < 2.0
    assert hits >= 0.8 * ok.sum()


def test_nucleus_orientation_in_image_matches_truth_angle():
    core, sim = _core(width=2048, height=2048, flip_x=True, read_noise_e=0.5, seed=11)
    core.setConfig("Objective", "20x")
    img = sim.render(exposure_ms=100.0, intensity_pct=100.0).astype(np.float64)
    bg = np.median(img)
    truth = sim.truth(sim.field_of_view())
    col, row = sim.stage_to_pixel(truth.x_um, truth.y_um)
    a, b = truth.semi_axes_um.T
    ok = (truth.phase == 0) & (np.abs(truth.z_um) < 1.0) & (a / b > 1.3)
    ok &= (col > 60) & (col < 1987) & (row > 60) & (row < 1987)
    dist = np.hypot(truth.x_um[:, None] - truth.x_um, truth.y_um[:, None] - truth.y_um)
    gap = dist - truth.radius_um[:, None] - truth.radius_um[None, :]
    np.fill_diagonal(gap, np.inf)
    ok &= gap.min(axis=1) > 4.0
    errors = []
    for i in np.flatnonzero(ok):
        r, c = round(row[i]), round(col[i])
        crop = img[r - 50 : r + 51, c - 50 : c + 51] - bg
        labels, _ = ndimage.label(crop > 0.4 * np.percentile(crop, 99.5))
        mask = labels == labels[50, 50]
        yy, xx = np.nonzero(mask)
        yy, xx = yy - yy.mean(), xx - xx.mean()
        theta_px = 0.5 * np.arctan2(2 * (xx * yy).mean(), (xx**2).mean() - (yy**2).mean())
        theta_stage = np.pi - theta_px  # flip_x: image columns run along stage -x
        d = (theta_stage - truth.angle_rad[i]) % np.pi
        errors.append(min(d, np.pi - d))
    assert len(errors) >= 5
    assert np.median(errors) < np.deg2rad(12)


def test_truth_records_are_json_able():
    _, sim = _core()
    truth = sim.truth(sim.field_of_view())
    assert len(truth) > 0
    recs = truth.to_records()
    json.dumps(recs)
    assert recs[0]["ids"] == int(truth.ids[0])
    assert len(recs[0]["semi_axes_um"]) == 2


def test_cells_are_disjointly_identified_and_move_slowly():
    sample = VirtualSample(SimulatorConfig(slide_width_um=2000, slide_height_um=2000))
    t0 = sample.cells_at(0.0)
    assert len(np.unique(t0.ids)) == len(t0) == pytest.approx(300 * 4, rel=0.01)
    t1 = sample.cells_at(600.0)
    common, i0, i1 = np.intersect1d(t0.ids, t1.ids, return_indices=True)
    step = np.hypot(t1.x_um[i1] - t0.x_um[i0], t1.y_um[i1] - t0.y_um[i0])
    speed = np.median(step) / 10.0  # µm per minute over 10 min
    assert 0.05 < speed < 0.6
    assert len(common) > 0.95 * len(t0)


def test_division_rounds_up_then_two_daughters_with_parent_id():
    cfg = SimulatorConfig(slide_width_um=1000, slide_height_um=1000)
    sample = VirtualSample(cfg)
    div = sample.divisions(0.0, 4 * 3600.0)[0]
    t_div = div.time_s
    rounding_s = cfg.rounding_min * 60

    def cell(t: float, cid: int):
        table = sample.cells_at(t)
        return table, np.flatnonzero(table.ids == cid)

    before, i = cell(t_div - rounding_s - 60, div.parent_id)
    assert before.phase[i] == 0
    rounding, j = cell(t_div - rounding_s / 2, div.parent_id)
    assert rounding.phase[j] == 1
    assert rounding.radius_um[j] < before.radius_um[i]
    a, b = rounding.semi_axes_um[j][0]
    assert a == pytest.approx(b)  # round
    assert rounding.brightness_dapi[j] > before.brightness_dapi[i]

    after = sample.cells_at(t_div + 1800.0)
    assert div.parent_id not in after.ids
    kids = np.flatnonzero(np.isin(after.ids, div.daughter_ids))
    assert len(kids) == 2
    assert set(after.parent_ids[kids]) == {div.parent_id}
    gap = np.hypot(*np.diff(np.stack([after.x_um[kids], after.y_um[kids]]), axis=1))
    assert gap[0] > after.radius_um[kids].mean()  # they separated
    # same ids whatever the query order: a fresh sample jumped straight to the end agrees
    assert div in VirtualSample(cfg).divisions(0.0, 4 * 3600.0)


def test_simulated_time_drives_divisions_through_the_clock():
    _, sim = _core()
    n0 = len(sim.truth())
    sim.clock.advance(12 * 3600.0)
    n1 = len(sim.truth())
    assert n1 > 1.2 * n0
    assert sim.sample.divisions(0.0, sim.clock.now())


def test_bleaching_dims_exposed_cells_only():
    core, sim = _core(width=512, height=512, bleach_half_dose={"DAPI": 100.0, "GFP": 100.0})
    here = (3000.0, 3000.0)
    core.setXYPosition(*here)
    fov = sim.field_of_view()
    first = _snap(core).astype(np.float64)
    for _ in range(20):  # 20 x 10 ms x 50 % = 100 ms dose = one half dose (+ the first)
        core.snapImage()
    last = _snap(core).astype(np.float64)

    def cell_signal(img: np.ndarray) -> float:
        return float(img.mean() - np.median(img))  # nuclei cover well under half the frame

    assert cell_signal(last) < 0.65 * cell_signal(first)
    lit = sim.truth(fov)
    assert np.all(lit.dose_dapi[np.abs(lit.x_um - here[0]) < 100] > 100.0)
    assert np.all(lit.dose_gfp == 0.0)
    far = sim.truth((7000.0, 7000.0, 7500.0, 7500.0))
    assert np.all(far.dose_dapi == 0.0)
    # brightfield light does not bleach
    core.setConfig("Channel", "BF")
    before = sim.truth(fov).dose_dapi.sum()
    core.snapImage()
    assert sim.truth(fov).dose_dapi.sum() == before


def test_fov_queries_on_a_10mm_slide_are_fast():
    sample = VirtualSample(SimulatorConfig())
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 10_000 - 1331, (200, 2))
    sample.cells_at(0.0, (0, 0, 1331, 1331))
    t = time.process_time()  # this process's CPU time: other test workers' load does not count
    n = 0
    for x, y in starts:
        n += len(sample.cells_at(0.0, (x, y, x + 1331, y + 1331)))
    per_query = (time.process_time() - t) / len(starts)
    assert n / len(starts) == pytest.approx(300 * 1.331**2, rel=0.2)
    assert per_query < 0.005


def test_clock_scaling_freezing_and_advance():
    frozen = SimClock(0.0)
    assert frozen.now() == 0.0
    assert frozen.advance(5.0) == 5.0
    frozen.set(7.5)
    assert frozen.now() == 7.5
    with pytest.raises(ValueError):
        frozen.set(1.0)
    fast = SimClock(1000.0)
    time.sleep(0.01)
    assert fast.now() >= 10.0


# --------------------------------------------------------------------------- acquisition


def test_mda_through_core_yields_every_frame():
    core, _ = _core()
    frames: list[tuple[np.ndarray, useq.MDAEvent]] = []
    where: list[tuple[float, float]] = []

    def on_frame(img: np.ndarray, ev: useq.MDAEvent) -> None:
        frames.append((img.copy(), ev))
        where.append(tuple(core.getXYPosition()))

    core.mda.events.frameReady.connect(on_frame)
    seq = useq.MDASequence(
        channels=["DAPI", "BF"],
        stage_positions=[(100.0, 200.0, 0.0)],
        time_plan={"interval": 0, "loops": 3},
    )
    core.mda.run(seq)
    assert len(frames) == 6
    assert all(xy == pytest.approx((100.0, 200.0)) for xy in where)
    by_channel: dict[str, list[float]] = {}
    for img, ev in frames:
        assert img.shape == (256, 256)
        by_channel.setdefault(ev.channel.config, []).append(float(img.mean()))
    assert min(by_channel["BF"]) > 5 * max(by_channel["DAPI"])


def test_sequence_acquisition_streams_frames():
    core, _ = _core()
    core.startSequenceAcquisition(5, 0, True)
    deadline = time.monotonic() + 10
    while core.isSequenceRunning() and time.monotonic() < deadline:
        time.sleep(0.01)
    frames = [core.popNextImage() for _ in range(core.getRemainingImageCount())]
    assert len(frames) == 5
    assert all(f.shape == (256, 256) and f.dtype == np.uint16 for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # fresh noise every frame


# --------------------------------------------------------------------------- real hardware


def test_load_micromanager_core_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.cfg"
    with pytest.raises(ConfigurationError, match=r"nope\.cfg"):
        load_micromanager_core(missing)


def test_load_micromanager_core_without_micromanager(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "scope.cfg"
    cfg.write_text("# empty\n")
    monkeypatch.setattr(_micromanager, "find_micromanager", lambda: None)
    with pytest.raises(MicroManagerNotInstalled, match="mmcore install") as info:
        load_micromanager_core(cfg)
    assert "not found" in str(info.value)
    assert isinstance(info.value, ConfigurationError)
