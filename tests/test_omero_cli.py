"""``scopeflow omero`` and the Prefect tasks, with OMERO refusing connections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scopeflow.cli import app
from tasks.storage import write_zstack
from tests.test_omero_support import closed_port, require_omero_py

PASSWORD = "cli-secret-Zq9"


@pytest.fixture()
def omero_env(monkeypatch, tmp_path: Path) -> Path:
    spill = tmp_path / "spool"
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("SCOPEFLOW_OMERO_HOST", "127.0.0.1")
    monkeypatch.setenv("SCOPEFLOW_OMERO_PORT", str(closed_port()))
    monkeypatch.setenv("SCOPEFLOW_OMERO_USERNAME", "alice")
    monkeypatch.setenv("SCOPEFLOW_OMERO_PASSWORD", PASSWORD)
    monkeypatch.setenv("SCOPEFLOW_OMERO_SPILL_DIR", str(spill))
    monkeypatch.setenv("SCOPEFLOW_OMERO_RETRY_INITIAL_S", "0.05")
    return spill


def _store(tmp_path: Path) -> Path:
    data = np.arange(2 * 16 * 16, dtype="uint16").reshape(2, 16, 16)
    return write_zstack(tmp_path / "z.ome.zarr", data, pixel_size_um=0.5, channel="DAPI")


def test_check_with_omero_down_names_server_and_hides_password(omero_env) -> None:
    require_omero_py()
    result = CliRunner().invoke(app, ["omero", "check"])
    assert result.exit_code == 2
    assert "refused the connection" in result.output and "127.0.0.1:" in result.output
    assert PASSWORD not in result.output


def test_register_spool_then_drain_keeps_it_while_omero_is_down(omero_env, tmp_path) -> None:
    require_omero_py()
    store = _store(tmp_path)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"objective": "20x", "stage": {"x": 1.5}}))
    runner = CliRunner()
    queued = runner.invoke(
        app,
        [
            "omero",
            "register",
            str(store),
            "--project",
            "P",
            "--dataset",
            "D",
            "--spool",
            "--run-id",
            "run-1",
            "--metadata",
            str(meta),
        ],
    )
    assert queued.exit_code == 0, queued.output
    key = json.loads(queued.output)["queued"]
    [pending] = (omero_env / "pending").glob("*.json")
    saved = json.loads(pending.read_text())
    assert saved["key"] == key and saved["run_id"] == "run-1"
    assert saved["metadata"]["stage"] == {"x": 1.5}
    drained = runner.invoke(app, ["omero", "drain", "--timeout", "0.3"])
    assert drained.exit_code == 1
    assert "1 registration(s) still wait" in drained.output and "refused" in drained.output
    assert PASSWORD not in drained.output + queued.output
    assert pending.exists()


def test_register_of_a_missing_path_says_what_to_pass(omero_env, tmp_path) -> None:
    missing = tmp_path / "nothing.ome.zarr"
    result = CliRunner().invoke(
        app, ["omero", "register", str(missing), "--project", "P", "--dataset", "D"]
    )
    assert result.exit_code == 2
    assert "nothing.ome.zarr does not exist" in result.output and "OME-Zarr" in result.output


def test_queue_for_omero_task_writes_the_request_to_the_spool(omero_env, tmp_path) -> None:
    from flows import queue_for_omero

    store = _store(tmp_path)
    key = queue_for_omero.fn(store, project="P", dataset="D", run_id="r", metadata={"a": 1})
    [pending] = (omero_env / "pending").glob("*.json")
    assert json.loads(pending.read_text())["key"] == key
