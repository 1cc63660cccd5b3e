"""The pieces of acquisition optimisation without a microscope: the image-based quality on
simulated frames, the seeded optuna suggester (a pure function of the trials so far), and the
search policy (fresh field per trial, deterministic keys, the dose budget)."""

from __future__ import annotations

import math

import pytest

from tasks.decisions import (
    AcquisitionSettings,
    FrameView,
    GridSuggester,
    OptunaSuggester,
    ParameterSearchPolicy,
    SearchObjective,
    SearchSpace,
    Trial,
    default_startup,
)
from tasks.hardware.sim import SimulatorConfig, build_simulated_core
from tasks.qc import QCWorkers, QualityScale, measure_object_quality

SPACE = SearchSpace((0.5, 200.0), (2.0, 100.0), (1, 2, 4))


@pytest.fixture(scope="module")
def sim():
    config = SimulatorConfig(seed=3, width=256, height=256, time_scale=0)
    return config, build_simulated_core(config)[1]


def _quality(sim, light_ms: float, x: float, binning: int = 1) -> float:
    config, simulation = sim
    frame = simulation.render(
        x_um=x, y_um=4000.0, z_um=0.0, objective="10x", channel="DAPI",
        exposure_ms=light_ms, intensity_pct=100.0, binning=binning,
    )  # fmt: skip
    px = config.pixel_size_um("10x", binning)
    return measure_object_quality(frame, px, QualityScale(50.0, 60.0)).quality


def test_the_quality_rises_with_light_then_falls_when_the_camera_saturates(sim) -> None:
    # different fields of the same slide; light in ms at 100 %
    dim, good, saturated = (_quality(sim, light, 3000.0 + 400 * k) for k, light in
                            enumerate((0.2, 8.0, 1000.0)))  # fmt: skip
    assert dim < 0.4 < good
    assert saturated < good - 0.3
    dark = measure_object_quality(
        sim[1].render(x_um=3000.0, y_um=4000.0, objective="10x", illuminated=False),
        sim[0].pixel_size_um("10x"),
    )
    assert dark.quality < 0.1


def test_binning_4_loses_the_pixels_an_object_needs(sim) -> None:
    assert _quality(sim, 2.0, 5000.0, binning=4) < _quality(sim, 2.0, 5400.0, binning=2) - 0.2


def test_the_quality_measured_by_workers_is_the_one_measured_here(sim) -> None:
    config, simulation = sim
    frame = simulation.render(x_um=6000.0, y_um=4000.0, objective="10x", exposure_ms=3.0)
    px = config.pixel_size_um("10x")
    scale = QualityScale(30.0, 80.0)
    with QCWorkers(
        "threads", workers=1, measure=measure_object_quality, measure_args=(scale,)
    ) as w:
        remote = w.submit(frame, pixel_size_um=px).result(timeout=60)
        here = w.measure_here(frame, px)
    assert remote.quality == here.quality == measure_object_quality(frame, px, scale).quality
    assert remote.objects > 3


def _trial(number: int, s: AcquisitionSettings, score: float) -> Trial:
    return Trial(number, s, score, 0.0, score, number, (0.0, 0.0))


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_the_optuna_suggester_is_a_pure_function_of_the_trials_so_far(sampler: str) -> None:
    for seed in (0, 1, 2):
        a = OptunaSuggester(SPACE, seed=seed, startup=3, sampler=sampler)
        b = OptunaSuggester(SPACE, seed=seed, startup=3, sampler=sampler)
        history: list[Trial] = []
        for number in range(6):
            s = a.suggest(tuple(history), number)
            assert s == b.suggest(tuple(history), number)  # a resumed run proposes the same
            assert SPACE.exposure_ms[0] <= s.exposure_ms <= SPACE.exposure_ms[1]
            assert SPACE.intensity_pct[0] <= s.intensity_pct <= SPACE.intensity_pct[1]
            assert s.binning in SPACE.binnings
            history.append(_trial(number, s, -abs(s.exposure_ms - 20.0)))
        # the random start-up trials differ from one another, and from another seed's
        assert len({t.settings for t in history}) == 6
    first = OptunaSuggester(SPACE, seed=0, sampler=sampler).suggest((), 0)
    assert first != OptunaSuggester(SPACE, seed=1, sampler=sampler).suggest((), 0)


@pytest.mark.parametrize(("sampler", "trials"), [("gp", 12), ("tpe", 24)])
def test_the_optimiser_moves_towards_better_scores(sampler: str, trials: int) -> None:
    """A smooth toy landscape (best at 20 ms, 30 %, binning 2): the model's proposals beat the
    random start-up trials."""
    suggester = OptunaSuggester(SPACE, seed=0, startup=6, sampler=sampler)
    history: list[Trial] = []
    for number in range(trials):
        s = suggester.suggest(tuple(history), number)
        score = -((math.log(s.exposure_ms / 20.0)) ** 2) - math.log(s.intensity_pct / 30.0) ** 2
        score -= 0.0 if s.binning == 2 else 1.0
        history.append(_trial(number, s, score))
    startup_best = max(t.score for t in history[:6])
    assert max(t.score for t in history[6:]) > startup_best


def test_the_start_up_is_a_third_of_the_budget_and_a_bad_sampler_is_named() -> None:
    assert [default_startup(n) for n in (1, 2, 10, 20, 30)] == [1, 1, 3, 7, 10]
    with pytest.raises(ValueError, match="use 'gp' or 'tpe'"):
        OptunaSuggester(SPACE, sampler="cmaes")  # type: ignore[arg-type]


def _view(index: int, number: int) -> FrameView:
    return FrameView(
        index, None, 0.0, 0.0, 0.0, 64, 64, 0.65, (0.65, 0, 0, 0, 0.65, 0), {"t": number}, 1
    )


def test_the_policy_images_a_fresh_field_per_trial_with_deterministic_keys(sim) -> None:
    grid = SPACE.grid(2, 2)
    fields = [(1000.0 + 400 * k, 2000.0) for k in range(len(grid))]
    policy = ParameterSearchPolicy(
        GridSuggester(grid), SearchObjective(20.0), fields, max_trials=len(grid),
        channel="DAPI", z_um=0.0, in_flight=3,
    )  # fmt: skip
    state = policy.initial_state()
    first = policy.first_commands(state)
    assert [c.key for c in first] == ["trial0000", "trial0001", "trial0002"]
    sent = list(first)
    result = measure_object_quality(sim[1].render(objective="10x", exposure_ms=3.0), 0.65)
    done = False
    for k in range(len(grid)):
        state, decision = policy.decide(state, _view(100 + k, k), result)
        sent += decision.commands
        done = decision.done
    assert done and len(state.trials) == len(grid)
    events = [c.events[0] for c in sent]
    assert len({(e.x_pos, e.y_pos) for e in events}) == len(grid)
    assert all(e.properties and e.properties[-1][:2] == ("Camera", "Binning") for e in events)
    assert state.trials[0].dose_mj == pytest.approx(20.0 * grid[0].intensity_pct / 100 * 0.0005)
    with pytest.raises(ValueError, match="no trial"):
        policy.decide(state, _view(999, 77), result)


def test_a_dose_budget_stops_the_search_with_the_reason_and_keeps_the_trials(sim) -> None:
    grid = [AcquisitionSettings(100.0, 50.0)] * 5  # 1 mJ each at 20 mW
    policy = ParameterSearchPolicy(
        GridSuggester(grid), SearchObjective(20.0), [(0.0, 0.0)] * 5, max_trials=5,
        channel="DAPI", z_um=0.0, dose_budget_mj=2.5, binning_property=None,
    )  # fmt: skip
    state = policy.initial_state()
    policy.first_commands(state)
    result = measure_object_quality(sim[1].render(objective="10x", exposure_ms=3.0), 0.65)
    state, d0 = policy.decide(state, _view(0, 0), result)
    state, d1 = policy.decide(state, _view(1, 1), result)
    assert d1.done and not d1.commands
    assert len(state.trials) == 2
    assert "dose budget: trial 2 needs 1 mJ" in d1.summary["stopped"]
    assert not d0.commands[0].events[0].properties[1:]  # no binning property sent
