"""The tracking flow's process killed (SIGKILL) mid-experiment, then re-run under the same run id:
it resumes from its decision log, no acquisition (stage move + frame) runs twice, no time point
is lost or stored twice, and the summary says it resumed. Real processes: the edge, the flow
(``scopeflow run tracking`` as a child, reporting to the session's Prefect server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import DecisionLog
from tasks.storage import FrameJournal

from .conftest import REPO, validate_store

pytestmark = pytest.mark.heavy

RUN_ID = "killed-tracking"
TIME_POINTS = 14


def _flow(params: Path, prefect_url: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PREFECT_API_URL=prefect_url, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "scopeflow", "run", "tracking", "--params", str(params)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip


def _decisions(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(r.get("type") == "decision" for r in DecisionLog.read(path))


def test_a_killed_tracking_flow_resumes_without_repeating_a_move_or_a_frame(
    prefect_harness, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--camera-size", "256", "--time-scale", "30", "--seed", "5"]
    with (
        EdgeProcess(tmp_path / "edge", extra_args=args) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        cells = client.truth((4_800.0, 4_800.0, 5_200.0, 5_200.0))["cells"]
        cell = min(cells, key=lambda c: abs(c["z_um"]))
        params = {
            "positions": [{"name": "cell", "x_um": cell["x_um"], "y_um": cell["y_um"]}],
            "time_points": TIME_POINTS,
            "interval_s": 0.6,
            "model": "classical",
            "run_id": RUN_ID,
            "edge_url": edge.url,
            "edge_token_file": str(edge.token_file),
            "output_dir": str(out),
            "transport": "tcp",
        }
        params_file = tmp_path / "params.json"
        params_file.write_text(json.dumps(params))
        decisions = out / RUN_ID / "decisions.jsonl"

        first = _flow(params_file, prefect_harness.url)
        deadline = time.monotonic() + 180
        while _decisions(decisions) < 5:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the flow made no decisions"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        killed_at = _decisions(decisions)
        assert killed_at < TIME_POINTS

        second = _flow(params_file, prefect_harness.url)
        stdout, stderr = second.communicate(timeout=300)
        assert second.returncode == 0, stderr[-3000:]
        summary = json.loads(stdout.strip().splitlines()[-1])
        client.wait_until_idle()

        # the edge: every acquisition of the run ran once, one frame each
        with FrameJournal.open(edge.journal) as journal:
            mine = [
                journal.read_meta(i)["meta"]
                for i in range(len(journal))
                if (journal.read_meta(i)["meta"]["command_id"] or "").startswith(f"{RUN_ID}.")
            ]
        ids = [m["command_id"] for m in mine]
        assert len(ids) == len(set(ids)) == TIME_POINTS, ids
        accepted = [
            json.loads(line)["command_id"]
            for line in (edge.data_dir / "commands.jsonl").read_text().splitlines()
        ]
        run_commands = [c for c in accepted if c.startswith(f"{RUN_ID}.")]
        assert len(run_commands) == len(set(run_commands))  # no command accepted twice

    # the store: every time point once, from the frames of the run
    store = out / RUN_ID / "positions" / "cell.ome.zarr"
    attrs = zarr.open_group(str(store), mode="r").attrs.asdict()
    found = _find(attrs, "time_points")
    assert found == list(range(TIME_POINTS))
    edge_frames = _find(attrs, "edge_frames")
    assert len(set(edge_frames)) == TIME_POINTS
    assert np.asarray(zarr.open_group(str(store), mode="r")["0"]).shape[0] == TIME_POINTS
    validate_store(store)

    # provenance: the log and the summary say it resumed, and that the replay moved nothing
    records = DecisionLog.read(decisions)
    assert [r["type"] for r in records].count("resume") == 1
    assert summary["resumed"]["times"] == 1
    assert summary["resumed"]["commands_repeated"] >= 1
    assert summary["time_points"] == TIME_POINTS


def _find(attrs: dict, key: str):
    """``key`` anywhere in the store's attributes (nested under ``ome``/``scopeflow``)."""
    if key in attrs:
        return attrs[key]
    for value in attrs.values():
        if isinstance(value, dict) and (found := _find(value, key)) is not None:
            return found
    return None
