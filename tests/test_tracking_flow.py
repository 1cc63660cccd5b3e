"""The tracking flow on real components: an edge process, Prefect's server, a Ray worker.

Scored against the simulator's ground truth with py-ctcmetrics (CTC TRA), stores checked with
both NGFF validators, artifacts read back from the server for this flow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flows import TrackedPosition, TrackingParams, score_tracking_on_simulation
from scopeflow import ConfigurationError
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.hardware.sim import SimulatorConfig
from tasks.live import DecisionLog
from tasks.storage import read_ctc_masks, read_ctc_tracks
from tests.conftest import validate_store


def _positions(client: EdgeClient, n: int) -> list[TrackedPosition]:
    cells = client.truth((4_700.0, 4_700.0, 5_300.0, 5_300.0))["cells"]
    cells = [c for c in cells if abs(c["z_um"]) < 1.0]
    chosen: list[dict] = []
    for c in cells:
        if all(np.hypot(c["x_um"] - o["x_um"], c["y_um"] - o["y_um"]) > 200 for o in chosen):
            chosen.append(c)
    return [
        TrackedPosition(name=f"cell-{c['ids']}", x_um=c["x_um"], y_um=c["y_um"]) for c in chosen[:n]
    ]


@pytest.fixture(scope="module")
def tracking_run(prefect_harness, tmp_path_factory):
    from flows.tracking import tracking

    out = tmp_path_factory.mktemp("tracking")
    # a simulated minute per time point, as 1 s at 60x; 2 s at 30x and a 3 s deadline leave
    # the loop time to spare when parallel test workers load the machine. The fallback is the
    # U-Net itself in this process: under that load the worker now and then answers past any
    # deadline (its first call, loading the model; spikes past 3 s in CI), and the classical
    # fallback loses a dense-field cell for a time point or two (centred 0.92): this test is
    # about the flow's tracking, the fallback's switching is tests/test_live_loop.py's
    args = ["--camera-size", "512", "--time-scale", "30", "--seed", "3"]
    with (
        EdgeProcess(out / "edge", extra_args=args) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        params = TrackingParams(
            positions=_positions(client, 2),
            time_points=12,
            interval_s=2.0,
            model="unet",
            model_options={},
            backend={"kind": "ray", "workers": 1},
            deadline_ms=3000.0,
            fallback_model="unet",
            link_distance_um=6.0,
            edge_url=edge.url,
            edge_token_file=edge.token_file,
            output_dir=out,
        )
        state = tracking(params, return_state=True)
        summary = state.result()
        truth = score_tracking_on_simulation(
            Path(summary["run_dir"]),
            SimulatorConfig(seed=3, width=512, height=512),
            objective="20x",
            channel="DAPI",
        )
        yield params, summary, truth, str(state.state_details.flow_run_id), client.state()


def test_tracking_keeps_the_cells_centred_and_scores_against_the_truth(tracking_run):
    params, summary, truth, _, edge_state = tracking_run
    assert summary["time_points"] == 12 and summary["positions"] == 2
    assert summary["centred_fraction"] >= 0.95
    assert truth["tra"] is not None and truth["tra"] >= 0.9, truth
    assert summary["refused"] == []
    run_dir = Path(summary["run_dir"])
    for store in summary["stores"]:
        validate_store(Path(store))
    for position in params.positions:
        res = run_dir / "ctc" / position.name
        masks = read_ctc_masks(res)
        assert len(masks) == 12
        tracks = {row[0]: row for row in read_ctc_tracks(res / "res_track.txt")}
        present = set(np.unique(np.stack(masks))) - {0}
        assert present <= set(tracks)  # every mask value is a track of the lineage
    # the flow's frames are found by command id, and every one was decided
    records = DecisionLog.read(run_dir / "decisions.jsonl")
    decided = [r for r in records if r["type"] == "decision"]
    assert len(decided) == 24
    assert all(r["command_id"].startswith(run_dir.name + ".track.") for r in decided)
    assert summary["analysis"]["engine"] == "ray" and summary["analysis"]["workers"] == 1
    assert edge_state.frames_journaled >= 24


def test_the_run_shows_its_artifacts_in_prefect(tracking_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    *_, flow_run_id, _ = tracking_run
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    keys = {a.key for a in found}
    assert {
        "tracking-summary",
        "tracking-tracks",
        "tracking-trajectories",
        "tracking-loop-latency",
        "tracking-centring-error",
    } <= keys
    latency = next(a for a in found if a.key == "tracking-loop-latency")
    assert "| total |" in latency.data and "frames" in latency.data


def test_tracks_and_decisions_are_on_disk_for_an_audit(tracking_run):
    params, summary, *_ = tracking_run
    run_dir = Path(summary["run_dir"])
    tracks = json.loads((run_dir / "tracks.json").read_text())
    assert [p["name"] for p in tracks["positions"]] == [p.name for p in params.positions]
    end = DecisionLog.read(run_dir / "decisions.jsonl")[-1]
    assert end["type"] == "end" and end["frames"] == 24
    assert (run_dir / "trajectories.png").stat().st_size > 1000


def test_a_position_outside_the_stage_limits_is_refused_before_anything_moves(
    prefect_harness, edge, tmp_path
):
    from flows.tracking import tracking

    with EdgeClient(edge.url, token_file=edge.token_file) as client:
        before = client.state()
        params = TrackingParams(
            positions=[TrackedPosition(name="off-slide", x_um=-50.0, y_um=100.0)],
            time_points=3,
            backend=None,
            edge_url=edge.url,
            edge_token_file=edge.token_file,
            output_dir=tmp_path,
        )
        with pytest.raises(ConfigurationError, match=r"off-slide.*outside the edge's stage limits"):
            tracking(params)
        after = client.state()
        assert after.stage == before.stage and after.frames_acquired == before.frames_acquired


def test_an_objective_the_envelope_forbids_is_refused_with_the_choices(
    prefect_harness, edge, tmp_path
):
    from flows.tracking import tracking

    params = TrackingParams(
        positions=[TrackedPosition(name="a", x_um=5_000.0, y_um=5_000.0)],
        objective="100x",
        time_points=3,
        backend=None,
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=tmp_path,
    )
    with pytest.raises(ConfigurationError, match=r"100x.*10x, 20x, 40x"):
        tracking(params)


def test_params_files_with_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="objectve"):
        TrackingParams.model_validate(
            {"positions": [{"name": "a", "x_um": 1, "y_um": 2}], "objectve": "20x"}
        )


def test_positions_from_overview_need_the_overview_and_workers_and_not_both_kinds():
    with pytest.raises(ValueError, match="needs `overview`"):
        TrackingParams.model_validate({"positions": "from_overview"})
    region = {"x0": 4_700, "y0": 4_700, "x1": 5_300, "y1": 5_300}
    with pytest.raises(ValueError, match="set `backend`"):
        TrackingParams.model_validate(
            {"positions": "from_overview", "overview": {"region": region}, "backend": None}
        )
    with pytest.raises(ValueError, match="only with positions: from_overview"):
        TrackingParams.model_validate(
            {"positions": [{"name": "a", "x_um": 1, "y_um": 2}], "overview": {"region": region}}
        )
    with pytest.raises(ValueError, match="region"):
        TrackingParams.model_validate(
            {"positions": "from_overview", "overview": {"region": {**region, "x1": 4_000}}}
        )


@pytest.fixture(scope="module")
def overview_run(prefect_harness, tmp_path_factory):
    """Tracking whose positions come from an overview: targeted imaging's overview tasks in
    the same flow run, on the same Ray worker."""
    from flows.tracking import tracking

    out = tmp_path_factory.mktemp("tracking-overview")
    args = ["--camera-size", "512", "--time-scale", "30", "--seed", "5"]  # as above: 2 s a minute
    with (
        EdgeProcess(out / "edge", extra_args=args) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        params = TrackingParams.model_validate(
            {
                "positions": "from_overview",
                "overview": {
                    "region": {"x0": 4_600, "y0": 4_600, "x1": 5_400, "y1": 5_400},
                    "rules": {"min_area_um2": 20, "max_area_um2": 600},
                    "cells": 2,
                    "min_separation_um": 250,
                },
                "time_points": 6,
                "interval_s": 2.0,
                "model": "classical",
                "backend": {"kind": "ray", "workers": 1},
                "deadline_ms": 3000.0,
                "link_distance_um": 6.0,
                "edge_url": edge.url,
                "edge_token_file": str(edge.token_file),
                "output_dir": str(out),
            }
        )
        state = tracking(params, return_state=True)
        summary = state.result()
        cells = client.truth((4_500.0, 4_500.0, 5_500.0, 5_500.0))["cells"]
        yield summary, cells, str(state.state_details.flow_run_id)


def test_tracking_follows_cells_found_by_the_overview(overview_run):
    summary, cells, flow_run_id = overview_run
    run_dir = Path(summary["run_dir"])
    assert summary["positions"] == 2 and summary["time_points"] == 6
    tracks = json.loads((run_dir / "tracks.json").read_text())
    first = [p["path"][min(p["path"], key=int)] for p in tracks["positions"]]
    assert len(first) == 2 and np.hypot(*np.subtract(*first)) >= 250  # far apart, as asked
    centres = np.array([(c["x_um"], c["y_um"]) for c in cells])
    radii = np.array([c["radius_um"] for c in cells])
    for x, y in first:  # each followed cell is a real nucleus of the sample
        d = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
        assert d.min() <= radii[np.argmin(d)] + 2.0, (x, y)
    assert summary["centred_fraction"] >= 0.95
    # the overview ran in this flow run, through targeted imaging's own tasks and loop
    overview = DecisionLog.read(run_dir / "overview-decisions.jsonl")
    tiles = [r for r in overview if r["type"] == "decision"]
    assert tiles and all(r["command_id"].startswith(run_dir.name + ".overview.") for r in tiles)
    assert (run_dir / "overview_mosaic.npz").exists()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        names = {
            t.name.rsplit("-", 1)[0]
            for t in client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])
                )
            )
        }
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert {"plan-overview", "segment-overview", "decide-targets", "track"} <= names
    trajectories = next(a for a in artifacts if a.key == "tracking-trajectories")
    assert "overview mosaic" in (trajectories.description or "")


def test_the_trajectories_are_drawn_over_the_mosaic_in_stage_coordinates(overview_run):
    from PIL import Image

    summary, *_ = overview_run
    run_dir = Path(summary["run_dir"])
    image = np.asarray(Image.open(run_dir / "trajectories.png").convert("RGB"))
    mosaic = np.load(run_dir / "overview_mosaic.npz")
    assert image.shape[1] > image.shape[0]  # the mosaic, then a close-up per position
    red, blue = np.array([230, 60, 60]), np.array([60, 140, 230])  # positions 1 and 2
    for colour in (red, blue):
        assert (np.abs(image.astype(int) - colour).sum(axis=2) < 30).sum() > 50
    assert len(mosaic["thumbs"]) >= 4
