"""Stimulate on an event: the pure policy (a pattern on the event's cell, a pump run after N
events, deterministic keys), the flow refusing a run its edge's envelope would refuse before
anything moves, and the demo on a simulated microscope with a pump and a DMD, scored on the
sample's ground truth over several seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scopeflow import ConfigurationError, PumpRun, device_action
from tasks.decisions import (
    Acquire,
    EventRules,
    EventTriggeredPolicy,
    FastProtocol,
    GentleProtocol,
    StimulateOnEventPolicy,
    StimulationPlan,
)
from tasks.hardware import EdgeClient, EdgeProcess

from .test_event_policy import BRIGHT, CENTRE, DIM, PX, QUIET, ROUNDED, frame, objects

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(900)]  # minutes of simulated runs

SEEDS = (0, 1)


def _policy(**plan: Any) -> StimulateOnEventPolicy:
    rules = EventRules(
        duration_s=100.0,
        gentle=GentleProtocol("DAPI", 10.0, 4.0),
        fast=FastProtocol((("DAPI", 50.0),), (0.0,), 1.0),
        roi_um=40.0,
    )
    inner = EventTriggeredPolicy([("a", 1000.0, 500.0), ("b", 2000.0, 500.0)], rules)
    return StimulateOnEventPolicy(inner, StimulationPlan(**plan))


def _device_commands(commands: tuple[Any, ...]) -> list[tuple[str, Any]]:
    out = []
    for command in commands:
        assert isinstance(command, Acquire)
        for event in command.events:
            if event.action is not None and event.action.type == "custom":
                out.append((command.key, device_action(event.action)))
    return out


def _run(policy: StimulateOnEventPolicy, p: int, results: list[Any]) -> list[Any]:
    state = policy.initial_state()
    decisions = []
    for t, table in enumerate(results):
        state, decision = policy.decide(state, frame(t, p=p), table)
        decisions.append(decision)
    return decisions


def test_the_policy_stimulates_the_rounded_cell_once_per_event_and_perfuses_after_n() -> None:
    drug = PumpRun(reservoir="drug", volume_ul=100, flow_ul_per_min=500)
    policy = _policy(perfusion=drug, perfuse_after_events=1, spot_radius_um=5.0)
    quiet = objects([(CENTRE, CENTRE, DIM), (CENTRE, CENTRE + 20, DIM)])
    rounded = objects([(CENTRE, CENTRE, DIM), (CENTRE, CENTRE + 20, BRIGHT)])
    decisions = _run(policy, 0, [quiet, quiet, rounded, rounded])
    sent = [_device_commands(d.commands) for d in decisions]
    assert sent[0] == sent[1] == sent[3] == []  # only where the event begins
    keys = [key for key, _ in sent[2]]
    assert keys == ["stim-p000-t00002", "perfuse"]
    pattern = sent[2][0][1]
    (spot,) = pattern.spots  # on the rounded nucleus, 20 px right of the one at the centre
    centre_x = 1000.0 + (CENTRE - (200 - 1) / 2) * PX
    assert spot.x_um == pytest.approx(centre_x + 20 * PX)
    assert spot.y_um == pytest.approx(500.0 + (CENTRE - (200 - 1) / 2) * PX)
    assert spot.radius_um == 5.0
    assert sent[2][1][1] == drug
    stim = decisions[2].commands[0]
    assert stim.events[0].x_pos == 1000.0 and stim.events[0].y_pos == 500.0  # fired there
    assert decisions[2].summary["stimulated"] == [[spot.x_um, spot.y_um]]
    # before the fast frames: the pattern, then the pump, then the inner policy's acquisition
    assert [c.key for c in decisions[2].commands][-1] == "p000-t00003"


def test_the_policy_waits_for_n_events_before_the_pump_and_repeats_its_keys() -> None:
    policy = _policy(perfusion=PumpRun(reservoir="drug", volume_ul=10, flow_ul_per_min=10),
                     perfuse_after_events=2)  # fmt: skip
    state = policy.initial_state()
    keys: list[str] = []
    for p in (0, 1):
        for t, table in enumerate([QUIET, QUIET, ROUNDED]):
            state, decision = policy.decide(state, frame(t, p=p), table)
            keys += [key for key, _ in _device_commands(decision.commands)]
    assert keys == ["stim-p000-t00002", "stim-p001-t00002", "perfuse"]
    again = _policy(perfusion=PumpRun(reservoir="drug", volume_ul=10, flow_ul_per_min=10),
                    perfuse_after_events=2)  # fmt: skip
    state = again.initial_state()
    replay: list[str] = []
    for p in (0, 1):
        for t, table in enumerate([QUIET, QUIET, ROUNDED]):
            state, decision = again.decide(state, frame(t, p=p), table)
            replay += [key for key, _ in _device_commands(decision.commands)]
    assert replay == keys  # a re-run sends the same ids: the edge runs none twice


def test_the_policy_can_perfuse_at_a_time_instead() -> None:
    drug = PumpRun(reservoir="drug", volume_ul=10, flow_ul_per_min=10)
    policy = _policy(perfusion=drug, perfuse_at_s=42.0)
    state = policy.initial_state()
    first = policy.first_commands(state)
    perfuse = [c for c in first if c.key == "perfuse"]
    assert len(perfuse) == 1 and perfuse[0].due_s == 42.0
    assert device_action(perfuse[0].events[0].action) == drug
    for t, table in enumerate([QUIET, QUIET, ROUNDED]):  # an event sends no second pump run
        state, decision = policy.decide(state, frame(t), table)
        assert "perfuse" not in [c.key for c in decision.commands]


def test_a_plan_the_edge_could_never_take_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="intensity"):
        StimulationPlan(intensity=150.0)
    with pytest.raises(ValueError, match="perfuse_after_events"):
        StimulationPlan(perfuse_after_events=0)
    from flows import PerfusionSettings

    with pytest.raises(ValueError, match="one trigger"):
        PerfusionSettings(after_events=2, at_s=10.0)
    with pytest.raises(ValueError, match="one trigger"):
        PerfusionSettings()


def test_an_envelope_without_the_devices_stops_the_flow_before_anything_moves(
    prefect_harness: Any, edge: EdgeProcess, client: EdgeClient, tmp_path: Path
) -> None:
    from flows import StimulateOnEventParams
    from flows.stimulate_on_event import stimulate_on_event

    before = client.state()
    params = StimulateOnEventParams(
        positions=[{"name": "a", "x_um": 5000.0, "y_um": 5000.0}],
        duration_s=5.0,
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=tmp_path,
        backend=None,
    )
    with pytest.raises(ConfigurationError, match=r"refuses this run's device actions.*custom"):
        stimulate_on_event(params)
    after = client.state()
    assert after.frames_journaled == before.frames_journaled
    assert (after.stage.x, after.stage.y) == (before.stage.x, before.stage.y)


@pytest.fixture(scope="module")
def runs(prefect_harness: Any, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from flows import run_stimulation_demo

    data = tmp_path_factory.mktemp("stimulation")
    return [
        run_stimulation_demo(data, duration_s=60.0, positions=2, seed=seed, quiet=True)
        for seed in SEEDS
    ]


def test_every_seed_stimulates_its_events_and_the_reporter_rises(
    runs: list[dict[str, Any]],
) -> None:
    for run in runs:
        assert run["triggers"] >= 1, run
        assert run["stimulations"] == run["stimulations_fired"] >= 1, run  # each sent was fired
        assert run["stimulations_refused"] == 0
        assert run["stimulated_cells"] >= 1
        assert run["stimulated_on_event_fraction"] >= 0.5, run
        assert run["reporter_activation_after"] > 0.5, run
        assert 0 < run["stimulation_dose_mj"] <= run["stimulations_fired"] * 1.0  # max_dose_mj
        assert run["dose_mj"] >= run["dose_frames_mj"]  # the patterns' dose is in the budget


def test_every_seed_perfuses_once_and_the_drug_slows_division(
    runs: list[dict[str, Any]],
) -> None:
    for run in runs:
        (infusion,) = run["infusions"]
        assert infusion["reservoir"] == "drug" and infusion["biology_rate"] == pytest.approx(0.1)
        assert run["divisions_without_drug"] >= 20, run
        assert run["divisions_after_drug"] <= 0.25 * run["divisions_without_drug"], run


def test_the_demo_shows_an_envelope_refusal_that_pumped_nothing(
    runs: list[dict[str, Any]],
) -> None:
    for run in runs:
        assert run["refused_example"] == {
            "status": 422,
            "limit": "devices.pumps.Pump.max_volume_ul",
            "pumped": 0,
        }
