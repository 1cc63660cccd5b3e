"""The adaptive-illumination pieces without a microscope: the pure policy (the sign of its
correction, deadband, clip, the split into exposure and intensity, the static mode), the
background level measured next to every object table, the classical model's noise threshold on
a simulated frame with dim and bright nuclei, and the simulator's brightness spread."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scopeflow import ObjectTable
from tasks.decisions import AdaptiveIlluminationPolicy, FrameView, IlluminationRules, LightSetting
from tasks.hardware.sim import SimulatorConfig, VirtualSample, build_simulated_core, truth_labels
from tasks.inference import background_level, load_model, measure_objects

RULES = IlluminationRules(target_snr=10.0, time_points=5)
PX = 0.325


def _frame(p: int = 0, t: int = 0) -> FrameView:
    return FrameView(
        index=0, command_id="run.illum.p000-t00000", stage_x_um=0.0, stage_y_um=0.0,
        stage_z_um=0.0, width=64, height=64, pixel_size_um=PX,
        affine=(PX, 0.0, 0.0, 0.0, PX, 0.0), event_index={"p": p, "t": t}, t_ready_ns=0,
    )  # fmt: skip


def _objects(snr: float | None, *, offset_px: float = 0.0) -> ObjectTable:
    """One object at the centre (or ``offset_px`` from it) whose SNR is ``snr``."""
    if snr is None:
        return ObjectTable((64, 64), *(np.zeros(0) for _ in range(5)), np.zeros((0, 4)))
    return ObjectTable(
        (64, 64), np.array([1]), np.array([100.0]), np.array([31.5 + offset_px]),
        np.array([31.5]), np.array([100.0 + 4.0 * snr]), np.array([[20, 20, 44, 44]]),
        extra={"background_mean": 100.0, "background_noise": 4.0},
    )  # fmt: skip


def _decide(snr: float | None, rules: IlluminationRules = RULES, **kw: float):
    policy = AdaptiveIlluminationPolicy([("a", 0.0, 0.0)], rules)
    state = policy.initial_state()
    policy.first_commands(state)
    return policy.decide(state, _frame(), _objects(snr, **kw))


def test_too_dim_asks_for_more_light_and_too_bright_for_less() -> None:
    start = RULES.start.light
    _, dim = _decide(3.0)
    _, bright = _decide(60.0)
    dim_next = dim.commands[0].events[0]
    bright_next = bright.commands[0].events[0]
    light = [e.exposure * e.properties[0][2] / 100.0 for e in (dim_next, bright_next)]
    assert light[0] > start and dim.summary["why"] == "brighter"
    assert light[1] < start and bright.summary["why"] == "dimmer"
    assert dim.summary["snr"] == pytest.approx(3.0)


def test_each_step_is_clipped_and_the_deadband_holds_the_light() -> None:
    _, huge = _decide(1e-3)  # needs ~1e4 more light: one clipped step only
    assert huge.summary["next_exposure_ms"] * huge.summary["next_intensity_percent"] / 100 == (
        pytest.approx(RULES.start.light * RULES.max_step, rel=1e-3)
    )
    aim = RULES.target_snr * RULES.margin
    _, held = _decide(aim * 1.1)
    assert held.summary["why"] == "within deadband"
    assert held.summary["next_exposure_ms"] == RULES.start.exposure_ms


def test_no_cell_near_the_centre_asks_for_more_light() -> None:
    _, none = _decide(None)
    _, far = _decide(20.0, offset_px=25.0 / PX)  # 25 µm off centre: another cell
    assert none.summary["snr"] is None and none.summary["why"] == "no cell found: brighter"
    assert far.summary["snr"] is None


def test_the_light_is_capped_at_the_ranges_and_says_so() -> None:
    rules = replace(RULES, exposure_range_ms=(2.0, 20.0), intensity_range_percent=(0.5, 10.0))
    policy = AdaptiveIlluminationPolicy([("a", 0.0, 0.0)], rules)
    state = policy.initial_state()
    for t in range(4):
        state, decision = policy.decide(state, _frame(t=t), _objects(0.5))
    assert decision.summary["why"] == "capped"
    assert (decision.summary["next_exposure_ms"], decision.summary["next_intensity_percent"]) == (
        20.0,
        10.0,
    )
    assert state.positions[0].capped >= 1


def test_the_static_mode_never_changes_the_light() -> None:
    rules = replace(RULES, adapt=False)
    _, decision = _decide(1.0, rules)
    assert decision.summary["why"] == "fixed"
    assert decision.commands[0].events[0].exposure == RULES.start.exposure_ms


def test_the_last_time_point_ends_the_position_and_ids_are_per_position_and_time() -> None:
    policy = AdaptiveIlluminationPolicy([("a", 0.0, 0.0), ("b", 9.0, 9.0)], RULES)
    state = policy.initial_state()
    keys = [c.key for c in policy.first_commands(state)]
    assert keys == ["p000-t00000", "p001-t00000"]
    state, decision = policy.decide(state, _frame(p=1, t=RULES.time_points - 1), _objects(12.5))
    assert decision.commands == ()


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-4, 1e4))
def test_every_light_splits_into_a_setting_inside_the_ranges(light: float) -> None:
    setting = RULES.setting_for(light)
    (e0, e1), (i0, i1) = RULES.exposure_range_ms, RULES.intensity_range_percent
    assert e0 <= setting.exposure_ms <= e1 and i0 <= setting.intensity_percent <= i1
    expected = min(max(light, RULES.min_light), RULES.max_light)
    assert setting.light == pytest.approx(expected, rel=2e-3)
    preferred = RULES.preferred_intensity_percent / 100.0
    if e0 * preferred * 1.001 < light < e1 * preferred * 0.999:  # the exposure alone gives it
        assert setting.intensity_percent == RULES.preferred_intensity_percent


def test_rules_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="inside the exposure and intensity ranges"):
        IlluminationRules(start=LightSetting(500.0, 2.0))
    with pytest.raises(ValueError, match="0 < min <= max"):
        IlluminationRules(intensity_range_percent=(5.0, 150.0))


def test_the_background_level_is_the_noise_of_the_empty_pixels() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 4.0, (256, 256))
    labels = np.zeros((256, 256), np.int32)
    labels[100:140, 100:140] = 1
    image[labels == 1] += 40.0
    image[95:100, 100:140] += 30.0  # a halo the level leaves out
    level = background_level(labels, image)
    assert level["background_mean"] == pytest.approx(100.0, abs=0.3)
    assert level["background_noise"] == pytest.approx(4.0, rel=0.05)
    assert measure_objects(labels, image).extra == level


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_noise_threshold_finds_dim_nuclei_beside_bright_ones_at_their_size(seed: int) -> None:
    """On simulated frames of nuclei of very different brightness, each isolated in-focus
    nucleus is found and its measured SNR matches its ground-truth SNR (truth mask, background
    2 µm away from any cell)."""
    from scipy import ndimage

    config = SimulatorConfig(seed=seed, width=256, height=256, time_scale=0.0,
                             brightness_sigma={"DAPI": 0.7, "GFP": 0.5})  # fmt: skip
    core, sim = build_simulated_core(config)
    core.setConfig("Objective", "20x")
    cells = sim.truth((3000.0, 3000.0, 7000.0, 7000.0))
    xy = np.stack([cells.x_um, cells.y_um], axis=1)
    alone = (np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)) < 20.0).sum(1) == 1
    picked = np.flatnonzero(alone & (np.abs(cells.z_um) < 1.0) & (cells.phase == 0))[:8]
    model = load_model("classical", working_radius_px=4.0, threshold="noise", contrast=5.0)
    ratios, truths = [], []
    for k in picked:
        core.setXYPosition(float(cells.x_um[k]), float(cells.y_um[k]))
        state = replace(sim.state(), channel="DAPI", exposure_ms=5.0, intensity_pct=10.0)
        pixels = sim.render(**state.__dict__).astype(np.float64)
        labels, ignore, ids = truth_labels(sim, state)
        mask = labels == int(np.flatnonzero(ids == cells.ids[k])[0]) + 1
        background = pixels[~ndimage.binary_dilation((labels > 0) | ignore, iterations=7)]
        truth = (pixels[mask].mean() - background.mean()) / background.std()
        table = measure_objects(model.segment(pixels, pixel_size_um=PX), pixels)
        d = np.hypot(table.centroid_row - 127.5, table.centroid_col - 127.5)
        near = np.flatnonzero(d * PX < 6.0)
        assert near.size, f"cell {cells.ids[k]} (truth SNR {truth:.1f}) not found"
        i = near[0]
        level, noise = table.extra["background_mean"], table.extra["background_noise"]
        ratios.append((table.mean_intensity[i] - level) / noise / truth)
        truths.append(truth)
    assert len(ratios) == len(picked) >= 5
    assert max(truths) > 3 * min(truths)  # dim and bright nuclei
    assert np.median(ratios) == pytest.approx(1.0, abs=0.15), ratios


def test_the_brightness_spread_defaults_to_the_former_sample_and_widens_when_asked() -> None:
    default = VirtualSample(SimulatorConfig(seed=3)).cells_at(0.0, (0, 0, 2000, 2000))
    same = VirtualSample(
        SimulatorConfig(seed=3, brightness_sigma={"DAPI": 0.25, "GFP": 0.5})
    ).cells_at(0.0, (0, 0, 2000, 2000))
    wide = VirtualSample(
        SimulatorConfig(seed=3, brightness_sigma={"DAPI": 0.7, "GFP": 0.5})
    ).cells_at(0.0, (0, 0, 2000, 2000))
    assert np.array_equal(default.brightness_dapi, same.brightness_dapi)
    spread = [np.std(np.log(c.brightness_dapi)) for c in (default, wide)]
    assert spread[1] > 2 * spread[0]
    assert np.array_equal(default.x_um, wide.x_um)  # the same cells, other brightness
    with pytest.raises(ValueError, match="brightness_sigma needs a value"):
        SimulatorConfig(brightness_sigma={"DAPI": 0.5})


def test_a_simulator_file_that_sets_an_option_is_refused_with_the_option(tmp_path: Path) -> None:
    """`edge serve --sim-config` (the demo's valid file runs in the flow tests)."""
    import subprocess
    import sys

    path = tmp_path / "sim.yaml"

    def serve(text: str) -> subprocess.CompletedProcess[str]:
        path.write_text(text)
        command = [sys.executable, "-m", "scopeflow", "edge", "serve", "--simulate",
                   "--port", "0", "--data-dir", str(tmp_path / "edge"),
                   "--sim-config", str(path)]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    done = serve("seed: 4\nbrightness_sigma: {DAPI: 0.7, GFP: 0.5}\n")
    assert done.returncode != 0 and "sets ['seed']: give them as --seed" in done.stderr
    done = serve("bleach_half_dose: {DAPI: 50.0}\n")
    assert done.returncode != 0 and "bleach_half_dose needs a value" in done.stderr
