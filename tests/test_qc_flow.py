"""The em-qc flow through its demo (a simulated SEM writing into a folder, a real Prefect
server) and `scopeflow qc` on existing files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.qc import FAULTS, EMMosaicSimulator, write_sem_tiff
from tests._prefect_server import PrefectServer
from tests.conftest import validate_store

REPO = Path(__file__).resolve().parents[1]


def test_em_qc_demo_judges_a_simulated_sem_run(
    tmp_path: Path, prefect_harness: PrefectServer
) -> None:
    from flows import run_em_qc_demo

    summary = run_em_qc_demo(tmp_path, backend="threads", interval_s=0.3, quiet=True)

    assert summary["tiles"] == 36
    assert summary["anomalies_true"] == {kind: 1 for kind in FAULTS}
    assert summary["recall_by_kind"] == {kind: 1.0 for kind in FAULTS}, summary["missed"]
    assert summary["false_alarm_rate"] == 0.0, summary["false_alarms"]
    assert summary["events_emitted"] == summary["levels"]["fail"] >= len(FAULTS)
    assert summary["verdict_latency_ms"]["p50"] is not None
    assert len(summary["stores"]) == 1 and not summary["store_errors"]
    store = Path(summary["stores"][0])
    assert sorted(int(p.name) for p in store.iterdir() if p.name.isdigit()) == list(range(35))
    tile = json.loads((store / "5" / "zarr.json").read_text())["attributes"]
    transforms = tile["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert transforms[1]["type"] == "translation" and transforms[1]["translation"][1] > 0
    validate_store(store / "5")
    mine = _artifacts_of(summary["prefect_flow_run_id"])
    for key in ("em-qc-report", "em-qc-metrics", "em-qc-failed-tiles"):
        assert key in mine, (key, sorted(mine))
    assert "readable" in mine["em-qc-report"].data  # the truncated tile is in the table
    # every anomaly reached the Prefect server as an event the automations can react to
    anomalies = _anomaly_events(prefect_harness, summary["run_id"], summary["events_emitted"])
    assert len(anomalies) == summary["events_emitted"], anomalies
    assert all(e["resource"]["scopeflow.source"] == "folder" for e in anomalies)


def test_qc_command_prints_a_verdict_per_image(tmp_path: Path) -> None:
    sim = EMMosaicSimulator(rows=2, cols=4, tile=256, seed=4, faults={5: ("defocus",)})
    for tile in sim.tiles():
        write_sem_tiff(tmp_path / tile.name, tile)
    (tmp_path / "zz_not_an_image.tif").write_text("a log file")
    out = subprocess.run(
        [sys.executable, "-m", "scopeflow", "qc", str(tmp_path), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    images = {i["image"]: i for i in result["images"]}
    assert len(images) == 9
    defocused = images[sim.render(5).name]
    assert defocused["level"] == "fail"
    focus = next(c for c in defocused["checks"] if c["metric"] == "focus")
    assert focus["level"] == "fail" and focus["value"] < focus["threshold"]
    junk = images["zz_not_an_image.tif"]
    assert junk["level"] == "fail" and "not a readable TIFF" in junk["error"]
    text = subprocess.run(
        [sys.executable, "-m", "scopeflow", "qc", str(tmp_path / "nope")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert text.returncode == 2 and "does not exist" in text.stderr


def _artifacts_of(flow_run_id: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def _anomaly_events(server: PrefectServer, run_id: str, expected: int) -> list[dict[str, Any]]:
    """The run's anomaly events on the server, waiting up to 60 s for ``expected`` of them
    (the server persists events asynchronously; a busy CI machine took over 2 s)."""
    import time

    import httpx

    from tasks.events import acquisition_resource

    body = {
        "filter": {
            "event": {"prefix": ["scopeflow.qc.anomaly"]},
            "related": {"id": [acquisition_resource(run_id)]},
        },
        "limit": 50,  # the most the endpoint pages
    }
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = httpx.post(f"{server.url}/events/filter", json=body, timeout=10).json()["events"]
        if len(found) >= expected:
            time.sleep(1)  # one more look: a duplicate would show here
            return httpx.post(f"{server.url}/events/filter", json=body, timeout=10).json()["events"]
        time.sleep(1)
    return found
