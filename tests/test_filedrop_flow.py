"""Goal: the targeted-imaging flow runs unchanged against the file-drop driver, with the
simulator behind the reference macro, and finds the real cells as on the simulator path.

It also checks what every acquisition flow now does at its end: the Prefect events and the
OMERO spool request with the run's provenance (no OMERO server here: the spool is the boundary).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr

from flows import TargetedImagingParams, score_targets
from flows.targeted_imaging import targeted_imaging
from tasks.decisions import SelectionRules
from tasks.hardware import EdgeProcess
from tasks.hardware.sim import SimulatorConfig

from ._prefect_server import PrefectServer
from .filedrop_driver import MacroThread
from .test_targeted_imaging import REGION, check_run

pytestmark = pytest.mark.heavy


@contextmanager
def file_drop_edge(
    tmp: Path, seed: int, time_scale: float = 1.0
) -> Iterator[tuple[EdgeProcess, MacroThread]]:
    drop = tmp / "drop"
    config = SimulatorConfig(
        seed=seed, width=512, height=512, nuclei_per_mm2=30, time_scale=time_scale
    )
    with (
        MacroThread(drop, config) as macro,
        EdgeProcess(
            tmp / "edge", extra_args=["--driver", "file-drop", "--drop-dir", str(drop)]
        ) as edge,
    ):
        yield edge, macro


def _params(edge: EdgeProcess, out: Path, max_targets: int = 500) -> TargetedImagingParams:
    return TargetedImagingParams(
        region=REGION,
        rules=SelectionRules(min_area_um2=20, max_area_um2=600, max_targets=max_targets),
        backend={"kind": "ray", "workers": 1},
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=out,
    )


def _targets(summary: dict) -> list[tuple[float, float]]:
    found = []
    for store in summary["stores"]["targets"]:
        target = dict(zarr.open_group(store, mode="r").attrs)["scopeflow"]["target"]
        found.append((target["x_um"], target["y_um"]))
    return found


def test_targeted_imaging_through_the_file_drop_macro_finds_the_real_cells(
    prefect_harness: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "omero-spool"
    monkeypatch.setenv("SCOPEFLOW_OMERO_HOST", "omero.facility.invalid")  # never contacted
    monkeypatch.setenv("SCOPEFLOW_OMERO_SPILL_DIR", str(spool))
    with file_drop_edge(tmp_path, seed=0) as (edge, macro):
        summary = targeted_imaging(_params(edge, tmp_path / "runs"))
        # the edge is not a simulator (no truth endpoint): the macro's simulator scores it
        assert summary["truth"] is None
        margin = 20.0
        x0, y0, x1, y1 = REGION.as_tuple()
        cells = macro.sim.truth((x0 - margin, y0 - margin, x1 + margin, y1 + margin))
        summary["truth"] = score_targets(_targets(summary), cells.to_records(), REGION.as_tuple())
        check_run(summary, 0)  # the same checks, counts and artifacts as the simulator path
        # every frame went through the macro: one image file per frame
        assert len(list((tmp_path / "drop" / "images").glob("*.tif"))) == summary["frames_acquired"]

    # queued for OMERO as it finished: one request for the folder of target stores, with the
    # run's provenance; the flow did not wait (the server name does not even resolve)
    assert len(summary["omero"]) == 1
    (pending,) = [
        json.loads(p.read_text()) for p in spool.rglob("*.json") if "failed" not in p.parts
    ]
    assert pending["project"] == "targeted-imaging" and pending["dataset"] == summary["run_id"]
    assert Path(pending["path"]) == Path(summary["stores"]["targets"][0]).parent
    provenance = pending["metadata"]["provenance"]
    assert provenance["run_id"] == summary["run_id"]
    assert provenance["params"]["edge_url"] == edge.url
    # started and finished reached the Prefect server
    assert len(summary["prefect_events"]) == 2
    names = _event_names(prefect_harness, summary["prefect_flow_run_id"])
    assert {"scopeflow.acquisition.started", "scopeflow.acquisition.finished"} <= names


def test_file_drop_and_simulator_paths_choose_the_same_targets(
    prefect_harness: PrefectServer, tmp_path: Path
) -> None:
    """Another seed, against the plain simulated edge of the same seed: the same detections and the
    same targets. The sample's clock is frozen on both (``time_scale`` 0), so neither run sees cells
    the other did not: with a live sample the counts differed by the cells that moved or divided
    between the runs (49 against 52 on a loaded CI machine). (The absolute check above holds on
    seed 0 only for both paths: on seeds 1 and 2 the classical model segments the noise of
    nucleus-free overview tiles, 1362 and 1632 detections for ~30 nuclei, on the simulator path as
    much as here, measured 2026-12-04.)"""
    seed = 1
    with file_drop_edge(tmp_path / "fd", seed, time_scale=0) as (edge, _):
        dropped = targeted_imaging(_params(edge, tmp_path / "fd-runs", max_targets=30))
    with EdgeProcess(
        tmp_path / "sim",
        extra_args=[
            *("--camera-size", "512", "--density", "30", "--seed", str(seed)),
            *("--time-scale", "0"),
        ],
    ) as sim_edge:
        simulated = targeted_imaging(_params(sim_edge, tmp_path / "sim-runs", max_targets=30))
    assert dropped["targets_detected"] == simulated["targets_detected"] > 30
    ours, theirs = np.array(sorted(_targets(dropped))), np.array(sorted(_targets(simulated)))
    assert ours.shape == theirs.shape == (30, 2)
    np.testing.assert_allclose(ours, theirs, atol=0.01)  # µm: the same pixels, the same centroids


def _event_names(server: PrefectServer, flow_run_id: str) -> set[str]:
    import httpx

    body = {
        "filter": {
            "event": {"prefix": ["scopeflow.acquisition."]},
            "resource": {"id": [f"scopeflow.acquisition.{flow_run_id}"]},
        },
        "limit": 50,
    }
    for _ in range(30):  # events are persisted asynchronously
        found = httpx.post(f"{server.url}/events/filter", json=body, timeout=10).json()
        names = {e["event"] for e in found.get("events", [])}
        if len(names) >= 2:
            return names
        import time

        time.sleep(1)
    return names


def test_tracking_runs_unchanged_through_the_file_drop_macro(
    prefect_harness: PrefectServer, tmp_path: Path
) -> None:
    """The tracking flow (U-Net on a Ray worker, re-centring every time point) through the
    macro. Scored by the tracker's own centring, not CTC TRA: frames from a vendor macro carry
    no simulator clock (``sample_time_s``), which the truth scoring needs."""
    from flows import TrackedPosition, TrackingParams
    from flows.tracking import tracking
    from tasks.live import DecisionLog

    drop = tmp_path / "drop"
    # sample time at 10x, 2 s per time point, a 3 s deadline and the U-Net as the local
    # fallback too: a loaded machine stretches the macro round trips and the worker's U-Net
    # calls (its first call and load spikes took 1.1-3 s under parallel test workers; the
    # classical fallback lost a cell on the frames past the deadline), and the bridge, not the
    # tracker's speed limit, is what this test is about
    config = SimulatorConfig(seed=3, width=512, height=512, time_scale=10)
    with (
        MacroThread(drop, config) as macro,
        EdgeProcess(
            tmp_path / "edge", extra_args=["--driver", "file-drop", "--drop-dir", str(drop)]
        ) as edge,
    ):
        cells = macro.sim.truth((4_700.0, 4_700.0, 5_300.0, 5_300.0)).to_records()
        chosen: list[dict] = []
        for c in cells:
            far = all(np.hypot(c["x_um"] - o["x_um"], c["y_um"] - o["y_um"]) > 200 for o in chosen)
            if abs(c["z_um"]) < 1.0 and far:
                chosen.append(c)
        params = TrackingParams(
            positions=[
                TrackedPosition(name=f"cell-{c['ids']}", x_um=c["x_um"], y_um=c["y_um"])
                for c in chosen[:2]
            ],
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
            output_dir=tmp_path / "runs",
        )
        summary = tracking(params)
    assert summary["time_points"] == 12 and summary["positions"] == 2
    assert summary["centred_fraction"] >= 0.95, summary
    assert summary["refused"] == []
    run_dir = Path(summary["run_dir"])
    decided = [r for r in DecisionLog.read(run_dir / "decisions.jsonl") if r["type"] == "decision"]
    assert len(decided) == 24
    assert all(r["command_id"].startswith(run_dir.name + ".track.") for r in decided)
    acquires = [json.loads(p.read_text()) for p in (drop / "commands").glob("*.json")]
    assert sum(c["op"] == "acquire" for c in acquires) >= 24
    assert len(summary["prefect_events"]) == 2  # acquisition started and finished
