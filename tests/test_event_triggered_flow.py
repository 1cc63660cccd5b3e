"""The event-triggered flow end to end: a real simulated edge process per seed, the real Prefect
server, the model on a local Ray worker; scored against the simulator's ground truth (divisions
imaged at the fast rate, light dose against always-fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import EventTriggeredParams, run_event_demo
from scopeflow import ConfigurationError
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import DecisionLog

from ._prefect_artifacts import artifact_keys_on_server
from .conftest import validate_store

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(900)]  # minutes of simulated runs

SEEDS = (0, 1, 2)
CAPTURED_FLOOR = 2 / 3  # through the flow on a loaded machine (the goal, 90 %: test_event_replay)
DOSE_GOAL = 0.30  # issue 14: <= 30 % of the always-fast protocol's light dose


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory) -> list[dict[str, Any]]:
    data = tmp_path_factory.mktemp("event-triggered")
    return [
        run_event_demo(data, duration_s=60.0, positions=3, seed=seed, quiet=True) for seed in SEEDS
    ]


def test_every_seed_ran_with_events_and_a_consistent_dose(runs: list[dict[str, Any]]) -> None:
    for summary in runs:
        assert summary["events_true"] >= 1, summary
        assert summary["triggers"] >= 1
        assert summary["time_points_fast"] > 0 and summary["time_points_gentle"] > 0
        # the edge's own dose account agrees with the frames the run logged
        assert summary["dose_mj"] == pytest.approx(summary["dose_frames_mj"], rel=1e-3)
        assert summary["dose_always_gentle_mj"] < summary["dose_mj"]
        assert summary["dose_mj"] < summary["dose_always_fast_mj"]
        assert summary["trigger_latency_ms"]["n"] == summary["triggers"]
        assert summary["trigger_latency_ms"]["p50"] > 0
        assert not summary["stopped"] and not summary["refused"]


def _figures(runs: list[dict[str, Any]]) -> list[tuple[int, int, int, float]]:
    return [(r["seed"], r["events_captured"], r["events_true"], r["dose_ratio"]) for r in runs]


def test_the_light_dose_is_at_most_30_percent_of_always_fast_on_every_seed(
    runs: list[dict[str, Any]],
) -> None:
    assert all(r["dose_ratio"] <= DOSE_GOAL for r in runs), _figures(runs)


def test_most_true_events_are_imaged_at_the_fast_rate_through_the_flow(
    runs: list[dict[str, Any]],
) -> None:
    """A floor, not the goal: the goal (>= 90 %) is judged on the deterministic replay of the
    same detectors and policy over 18 seeds (tests/test_event_replay.py), since the machine's
    load moves a run's figures here by a frame or two. Measured through the flow on seeds 0-5:
    16 of 18 (README: Event-triggered); a static gentle protocol images none fast."""
    captured = sum(r["events_captured"] for r in runs) / sum(r["events_true"] for r in runs)
    assert captured >= CAPTURED_FLOOR, _figures(runs)


def test_the_decisions_name_every_frame_mode_and_the_stores_are_valid(
    runs: list[dict[str, Any]],
) -> None:
    run_dir = Path(runs[0]["run_dir"])
    records = [r for r in DecisionLog.read(run_dir / "decisions.jsonl") if r["type"] == "decision"]
    assert {r["event_index"]["m"] for r in records} == {0, 1}
    ids = [c["id"] for r in records for c in r["commands"]]
    assert len(ids) == len(set(ids))  # one id per time point and position
    assert all(".event.p" in i for i in ids)
    fast = [Path(s) for s in runs[0]["stores"] if "-fast-" in s]
    gentle = [Path(s) for s in runs[0]["stores"] if "-gentle-" in s]
    assert fast and gentle
    validate_store(fast[0])
    attrs = json.loads((fast[0] / "zarr.json").read_text())["attributes"]["scopeflow"]
    assert attrs["mode"] == "fast" and len(attrs["sample_time_s"]) >= 2
    assert (run_dir / "timeline.png").stat().st_size > 0


def test_the_run_shows_its_artifacts_in_prefect(runs: list[dict[str, Any]]) -> None:

    expected = {"event-summary", "event-timeline", "event-positions", "event-loop-latency"}
    assert artifact_keys_on_server(expected) == expected


def _params(edge: EdgeProcess, tmp_path: Path, **kw: Any) -> EventTriggeredParams:
    base: dict[str, Any] = {
        "positions": [{"name": "a", "x_um": 5000.0, "y_um": 5000.0}],
        "duration_s": 5.0,
        "edge_url": edge.url,
        "edge_token_file": edge.token_file,
        "output_dir": tmp_path,
        "backend": None,
    }
    return EventTriggeredParams.model_validate(base | kw)


def test_an_envelope_that_forbids_the_fast_protocol_stops_before_anything_moves(
    prefect_harness, edge: EdgeProcess, client: EdgeClient, tmp_path: Path
) -> None:
    from flows.event_triggered import event_triggered

    before = client.state()
    fast = {"channels": [{"channel": "DAPI", "exposure_ms": 5000.0}], "interval_s": 1.0}
    with pytest.raises(ConfigurationError, match=r"forbids the fast protocol.*max_exposure_ms"):
        event_triggered(_params(edge, tmp_path, fast=fast))
    after = client.state()
    assert after.frames_journaled == before.frames_journaled
    assert (after.stage.x, after.stage.y) == (before.stage.x, before.stage.y)


def test_a_detector_that_cannot_load_is_refused_with_the_fix(
    edge: EdgeProcess, tmp_path: Path
) -> None:
    params = _params(edge, tmp_path, detectors=["rounding", "nosuchpkg.detectors:mitosis"])
    with pytest.raises(ConfigurationError, match=r"cannot be loaded.*install its package"):
        params.event_detectors()


def test_params_that_make_no_sense_are_refused_with_the_fix(tmp_path: Path) -> None:
    base = {"positions": [{"name": "a", "x_um": 1.0, "y_um": 1.0}]}
    with pytest.raises(ValueError, match="must be shorter"):
        EventTriggeredParams.model_validate(base | {"fast": {"interval_s": 10.0}})
    with pytest.raises(ValueError, match="end_on names"):
        EventTriggeredParams.model_validate(base | {"end_on": ["mitosis"]})
    with pytest.raises(ValueError, match=r"extra_forbidden|Extra inputs"):
        EventTriggeredParams.model_validate(base | {"colour": "red"})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base | {"duration_s": 30.0}))
    assert EventTriggeredParams.model_validate(yaml.safe_load(path.read_text())).duration_s == 30


def test_a_detector_that_raises_stops_its_position_and_the_loop_goes_on(
    prefect_harness, edge: EdgeProcess, tmp_path: Path
) -> None:
    """A user's detector raises at one position: that frame's decision logs the error and the
    position stops with the reason; the other position runs to the end; frames are kept."""
    from flows.event_triggered import event_triggered

    params = _params(
        edge,
        tmp_path,
        positions=[
            {"name": "west", "x_um": 4000.0, "y_um": 5000.0},
            {"name": "east", "x_um": 7000.0, "y_um": 5000.0},
        ],
        duration_s=6.0,
        gentle={"interval_s": 1.0},
        fast={"interval_s": 0.5},
        detectors=["tests.event_detector_plugins:failing_east"],
        end_on=[],
    )
    summary = event_triggered(params)
    assert "RuntimeError: mitosis model crashed" in summary["stopped"]["east"]
    assert "west" not in summary["stopped"]
    records = [
        r
        for r in DecisionLog.read(Path(summary["run_dir"]) / "decisions.jsonl")
        if r["type"] == "decision"
    ]
    east = [r for r in records if r["event_index"]["p"] == 1]
    west = [r for r in records if r["event_index"]["p"] == 0]
    assert [r["event_index"]["t"] for r in east] == [0, 1, 2]  # frames up to the failure kept
    assert "mitosis model crashed" in east[-1]["decision"]["stopped"] and not east[-1]["commands"]
    assert [r["event_index"]["t"] for r in west] == list(range(7))  # 0..6 s, every second
    assert any("/west/" in s for s in summary["stores"])
    assert any("/east/" in s for s in summary["stores"])


def test_a_dose_budget_exhausted_mid_run_stops_with_the_reason_and_keeps_the_frames(
    prefect_harness, tmp_path: Path
) -> None:
    """The edge's light dose budget runs out after four gentle frames (0.1 mJ each): the
    fifth time point is refused, the position stops with the edge's reason naming the limit,
    the four frames and their decisions are stored, and nothing more was acquired."""
    from flows.event_triggered import event_triggered

    envelope = tmp_path / "envelope.yaml"
    envelope.write_text("light_dose_budget_mj: 0.45\n")
    args = ["--camera-size", "512", "--envelope", str(envelope)]
    with EdgeProcess(tmp_path / "edge", extra_args=args) as edge:
        params = _params(edge, tmp_path, duration_s=5.0, gentle={"interval_s": 0.5},
                         fast={"interval_s": 0.25})  # fmt: skip
        summary = event_triggered(params)
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            state = client.state()
    assert "light_dose_budget_mj" in summary["stopped"]["a"]
    assert "refused time point 4" in summary["stopped"]["a"]
    assert state.frames_journaled == 4 and summary["time_points_gentle"] == 4
    assert summary["dose_mj"] == pytest.approx(0.4, rel=1e-3)
    store = next(Path(s) for s in summary["stores"])
    validate_store(store)
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]["scopeflow"]
    assert attrs["time_points"] == [0, 1, 2, 3]
