"""Targeted imaging as a Prefect flow against a real edge process and real Ray / Dask clusters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zarr

from flows import DetailSettings, Region, TargetedImagingParams, score_targets
from flows.targeted_imaging import targeted_imaging
from tasks.decisions import SelectionRules
from tasks.hardware import EdgeClient, EdgeProcess

from ._browser import browser_page
from ._prefect_server import PrefectServer
from .conftest import validate_store

REGION = Region(x0=4_500.0, y0=4_500.0, x1=5_500.0, y1=5_500.0)
EDGE_ARGS = ["--camera-size", "512", "--density", "30"]


@pytest.fixture(scope="module")
def sparse_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    with EdgeProcess(tmp_path_factory.mktemp("ti-edge"), extra_args=EDGE_ARGS) as edge:
        yield edge


def _params(edge: EdgeProcess, out: Path, backend: str, **update: object) -> TargetedImagingParams:
    base = TargetedImagingParams(
        region=REGION,
        rules=SelectionRules(min_area_um2=20, max_area_um2=600, max_targets=500),
        backend={"kind": backend, "workers": 1},
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=out,
    )
    return base.model_copy(update=update)


@pytest.fixture(scope="module")
def ray_run(
    prefect_harness: None, sparse_edge: EdgeProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, int]:
    """One flow run on Ray: its summary and the edge's frame count before it."""
    before = EdgeClient(sparse_edge.url, token_file=sparse_edge.token_file).wait_until_idle()
    summary = targeted_imaging(_params(sparse_edge, tmp_path_factory.mktemp("ray-run"), "ray"))
    return summary, before.frames_acquired


def test_on_ray_targets_are_the_real_cells_and_everything_is_stored(
    ray_run: tuple[dict, int],
) -> None:
    check_run(*ray_run)


def test_on_dask_targets_are_the_real_cells_and_everything_is_stored(
    prefect_harness: None, sparse_edge: EdgeProcess, tmp_path: Path
) -> None:
    """Dask workers from the ``local`` compute profile, as the batch flows get theirs (the
    params' ``backend`` is ignored when a profile is named)."""
    before = EdgeClient(sparse_edge.url, token_file=sparse_edge.token_file).wait_until_idle()
    params = _params(sparse_edge, tmp_path, "ray", profile="local")
    summary = targeted_imaging(params)
    check_run(summary, before.frames_acquired)
    assert summary["analysis"] == {
        "engine": "dask",
        "profile": "local",
        "profile_kind": "local",
        "workers": 2,
    }


def check_run(summary: dict, frames_before: int) -> None:
    truth = summary["truth"]
    assert truth["cells_in_region"] >= 10
    # a dense slide (touching nuclei) with the classical model: this checks the wiring (a wrong
    # pixel -> stage mapping scores ~0); the product goal (0.95) is checked on the demo below
    assert truth["precision"] >= 0.95, summary
    assert truth["recall"] >= 0.8, summary
    per_target = len(DetailSettings().z_offsets())
    expected = summary["overview_tiles"] + per_target * summary["targets_imaged"]
    assert summary["frames_acquired"] - frames_before == expected
    assert summary["frames_journaled"] == summary["frames_acquired"]
    assert summary["detail_frames"] < summary["full_tiling_frames"]
    stores = [Path(p) for p in summary["stores"]["targets"]]
    assert len(stores) == summary["targets_imaged"]
    planes = sum(zarr.open_array(store / "0", mode="r").shape[0] for store in stores)
    assert summary["frames_stored"] == planes == per_target * summary["targets_imaged"]
    for store in stores[:2]:
        validate_store(store)
    assert (Path(summary["stores"]["run_dir"]) / "overview_mosaic.png").stat().st_size > 1000
    mine = _artifacts_of(summary["prefect_flow_run_id"])  # this run's, not the last run's
    for key in (
        "targeted-imaging-targets",
        "targeted-imaging-overview",
        "targeted-imaging-summary",
        "targeted-imaging-loop-latency",
    ):
        assert key in mine, (key, sorted(mine))


def _artifacts_of(flow_run_id: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


TASKS = (
    "plan-overview",
    "segment-overview",
    "decide-targets",
    "post-detail-acquisitions",
    "store-detail-stacks",
    "summarise",
)


def test_the_run_its_tasks_and_artifacts_show_in_the_prefect_ui(
    prefect_harness: PrefectServer, ray_run: tuple[dict, int]
) -> None:
    """Headless Chromium on the real Prefect UI: what a facility user sees for a run."""
    summary, _ = ray_run
    run_id = summary["prefect_flow_run_id"]
    assert run_id, summary
    # this run's artifacts (other runs reuse the keys); fetched before the browser, because
    # Prefect's calls turn async inside the event loop Playwright runs
    by_key = _artifacts_of(run_id)
    summary_md, table, overview = (
        by_key[f"targeted-imaging-{key}"] for key in ("summary", "targets", "overview")
    )
    with browser_page() as page:
        page.goto(f"{prefect_harness.base_url}/runs/flow-run/{run_id}")
        page.get_by_text("targeted-imaging", exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("Completed").first.wait_for(timeout=30_000)
        page.get_by_text("Task Runs", exact=True).first.click()
        for name in TASKS:
            page.get_by_text(re.compile(f"^{name}-")).first.wait_for(timeout=30_000)

        page.goto(f"{prefect_harness.base_url}/artifacts/artifact/{summary_md.id}")
        page.get_by_text(summary["run_id"]).first.wait_for(timeout=30_000)

        page.goto(f"{prefect_harness.base_url}/artifacts/artifact/{table.id}")
        page.get_by_text("x_um").first.wait_for(timeout=30_000)

        page.goto(f"{prefect_harness.base_url}/artifacts/artifact/{overview.id}")
        image = page.locator("img[src^='data:image/png']").first
        image.wait_for(timeout=30_000)
        assert image.evaluate("img => img.naturalWidth") > 100


def test_a_decision_outside_the_envelope_fails_the_flow_with_the_reason(
    prefect_harness: None, tmp_path: Path
) -> None:
    envelope = tmp_path / "envelope.yaml"
    envelope.write_text("z_limits_um: [-1, 1]\n")
    args = [*EDGE_ARGS, "--envelope", str(envelope)]
    with EdgeProcess(tmp_path / "edge", extra_args=args) as edge:
        params = _params(edge, tmp_path / "out", "ray").model_copy(
            update={"detail": DetailSettings(z_range_um=6.0, z_step_um=2.0)}
        )
        state = targeted_imaging(params, return_state=True)
        assert state.is_failed()
        message = str(state.result(raise_on_failure=False))
        assert "z_limits_um" in message
        edge_state = EdgeClient(edge.url, token_file=edge.token_file).state()
        assert edge_state.queue_depth == 0
        assert edge_state.objective == "40x"  # switched, then the z-stacks were refused whole


def test_scoring_counts_each_true_cell_once() -> None:
    cells = [
        {"ids": 1, "x_um": 0.0, "y_um": 0.0, "radius_um": 5.0},
        {"ids": 2, "x_um": 50.0, "y_um": 0.0, "radius_um": 5.0},
        {"ids": 3, "x_um": 500.0, "y_um": 0.0, "radius_um": 5.0},  # outside the region
    ]
    score = score_targets([(1.0, 1.0), (0.5, 0.0), (30.0, 0.0)], cells, (-10, -10, 100, 10))
    assert score == {
        "cells_in_region": 2,
        "recall": 0.5,
        "precision": round(2 / 3, 4),
        "cells_found": 1,
        "targets_on_cells": 2,
    }
    # several regions: a nucleus in any of them counts
    two = score_targets([(1.0, 1.0)], cells, [(-10, -10, 10, 10), (490, -10, 510, 10)])
    assert two["cells_in_region"] == 2 and two["recall"] == 0.5


def test_the_demo_meets_its_goals_as_a_user_runs_it(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "scopeflow", "demo", "--json", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    for key in ("run_id", "frames_acquired", "frames_stored", "targets_detected",
                "targets_imaged", "truth", "stores", "wall_s", "loop_latency_ms"):  # fmt: skip
        assert key in summary, key
    assert summary["truth"]["recall"] >= 0.95 and summary["truth"]["precision"] >= 0.95, summary
    assert summary["frames_journaled"] == summary["frames_acquired"]
    assert summary["frames_stored"] == summary["detail_frames"]  # read back from the stores
    assert summary["detail_vs_full_tiling"] < 0.6
    assert 0 < summary["wall_s"] < 280  # ~21 s on a quiet machine; its speed is benchmarked
    assert set(summary["loop_latency_ms"]) == {"p50", "p99"}  # queueing excluded
    assert set(summary["queueing_ms"]) == {"p50", "p99"}  # tiles behind earlier tiles
    assert all(Path(p).exists() for p in summary["stores"]["targets"])


def test_run_command_takes_a_params_file_and_reports_bad_ones(
    prefect_harness: None, sparse_edge: EdgeProcess, tmp_path: Path
) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from scopeflow.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "region": {"x0": 4800, "y0": 4800, "x1": 5200, "y1": 5200},
                "backend": {"kind": "dask", "workers": 1},
                "rules": {"max_targets": 3},
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    args = ["run", "targeted-imaging", "--params", str(params)]
    args += ["--edge-url", sparse_edge.url, "--token-file", str(sparse_edge.token_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < summary["targets_imaged"] <= 3

    params.write_text("region: {x0: 10, y0: 10, x1: 0, y1: 20}\n")
    bad = CliRunner().invoke(app, ["run", "targeted-imaging", "--params", str(params)])
    assert bad.exit_code == 2
    assert "region" in bad.output and "empty" in bad.output
