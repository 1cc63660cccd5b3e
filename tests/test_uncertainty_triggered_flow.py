"""The uncertainty-triggered flow end to end: real simulated edge processes (one per protocol and
seed), the real Prefect server, the virtual stain on a local Ray or Dask worker; scored against
the simulator's ground truth (nuclei F1) and the static protocol (DAPI every time point). The
goal (half the DAPI acquisitions saved at equal accuracy) is judged on the deterministic replay
of the same policy, tests/test_uncertainty_replay.py: a live run's pace, and so how much the
sample changes between time points, moves with the machine's load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import UncertaintyParams, run_uncertainty_demo
from scopeflow import ConfigurationError
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import DecisionLog

from ._prefect_artifacts import artifact_keys_on_server
from .conftest import validate_store

# three demos (two flow runs and two edges each) take 10-15 minutes on two loaded cores
pytestmark = [pytest.mark.heavy, pytest.mark.timeout(2400)]

SEEDS = ((0, "ray"), (1, "dask"), (2, "ray"))
PREDICTOR = "carry-forward"  # the default (virtual-stain: README)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory) -> list[dict[str, Any]]:
    data = tmp_path_factory.mktemp("uncertainty")
    return [
        run_uncertainty_demo(data, backend=backend, seed=seed, quiet=True, predictor=PREDICTOR)
        for seed, backend in SEEDS
    ]


def test_every_seed_acquires_what_its_uncertainty_asked_for_and_pays_that_dose(
    runs: list[dict[str, Any]],
) -> None:
    for summary in runs:
        n = summary["positions"] * summary["time_points"]
        assert summary["expensive_acquisitions_static"] == n
        (decisions,) = _protocol_dir(summary, "uncertainty").glob("*/decisions.jsonl")
        cheap = [
            r["decision"]
            for r in DecisionLog.read(decisions)
            if r["type"] == "decision" and r["decision"].get("role") == "cheap"
        ]
        assert len(cheap) == n
        threshold = summary["threshold"]  # both rounded to 5 decimals in the records
        assert all(
            d["acquire"] == (d["uncertainty"] > threshold)
            for d in cheap
            if abs(d["uncertainty"] - threshold) > 1e-5
            and d["reason"] in ("uncertain", "predicted")
        )
        # the first real frame at each position, and one at least every max_predicted_run + 1
        assert {d["p"] for d in cheap if d["reason"] == "no-reference" and d["t"] == 0} == set(
            range(summary["positions"])
        )
        assert all(d["t"] == 0 for d in cheap if d["reason"] == "no-reference")
        limit = summary["max_predicted_run"] or summary["time_points"]
        for p in range(summary["positions"]):
            run = 0
            for d in sorted((d for d in cheap if d["p"] == p), key=lambda d: d["t"]):
                run = 0 if d["acquire"] else run + 1
                assert run <= limit
        # each real frame came with the reference model's candidates (classical-candidates)
        expensive = [
            r["decision"]
            for r in DecisionLog.read(decisions)
            if r["type"] == "decision" and r["decision"].get("role") == "expensive"
        ]
        assert len(expensive) == sum(d["acquire"] for d in cheap)
        assert all(0 <= d["candidates_confirmed"] <= d["candidates"] for d in expensive)
        # a time point not acquired logged what stood in for it
        assert all(("stand_in" in d) != d["acquire"] for d in cheap)
        asked = sum(d["acquire"] for d in cheap)
        assert summary["expensive_acquisitions"] == asked
        # the edges' own dose accounts: every DAPI frame costs the same, brightfield nothing
        assert summary["dose_static_mj"] > 0
        assert summary["dose_mj"] == pytest.approx(summary["dose_static_mj"] * asked / n)
        assert summary["nuclei_true"] > 5 * summary["positions"]
        assert summary["predictor"] == PREDICTOR


def _protocol_dir(summary: dict[str, Any], protocol: str) -> Path:
    """The folder of one protocol's edge and run inside a demo's run folder."""
    (folder,) = Path(summary["run_dir"]).glob(f"{protocol}-*")
    return folder


def _figures(runs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["seed"],
            r["expensive_acquisitions"],
            r["reduction"],
            r["accuracy"],
            r["accuracy_static"],
        )
        for r in runs
    ]


def test_the_smart_protocol_predicts_some_frames_and_saves_their_dose_on_every_seed(
    runs: list[dict[str, Any]],
) -> None:
    assert all(r["reduction"] > 0 for r in runs), _figures(runs)
    assert all(r["dose_mj"] < r["dose_static_mj"] for r in runs), _figures(runs)
    # the static protocol acquires every frame: its accuracy is the real channel's
    assert all(r["accuracy_static"] > 0.85 for r in runs), _figures(runs)


def test_the_stores_and_the_artifacts_show_the_run(runs: list[dict[str, Any]]) -> None:

    stores = [Path(s) for s in runs[0]["stores"]]
    smart_dir = _protocol_dir(runs[0], "uncertainty")
    expensive = [s for s in stores if s.name == "expensive.ome.zarr" and smart_dir in s.parents]
    cheap = [s for s in stores if s.name == "cheap.ome.zarr"]
    assert cheap and len(cheap) >= runs[0]["positions"]
    validate_store(cheap[0])
    attrs = json.loads((cheap[0] / "zarr.json").read_text())["attributes"]["scopeflow"]
    assert attrs["time_points"] == list(range(runs[0]["time_points"]))
    assert len(attrs["uncertainty"]) == runs[0]["time_points"]
    if expensive:
        validate_store(expensive[0])
    run_dir = next(smart_dir.glob("*/uncertainty.png")).parent
    assert (run_dir / "uncertainty.png").stat().st_size > 0
    expected = {
        "uncertainty-summary",
        "uncertainty-over-time",
        "uncertainty-positions",
        "uncertainty-loop-latency",
        "uncertainty-predicted-vs-acquired",
    }
    assert artifact_keys_on_server(expected) == expected


def _params(edge: EdgeProcess, tmp_path: Path, **kw: Any) -> UncertaintyParams:
    base: dict[str, Any] = {
        "positions": [{"name": "a", "x_um": 5000.0, "y_um": 5000.0}],
        "time_points": 2,
        "interval_s": 0.5,
        "edge_url": edge.url,
        "edge_token_file": edge.token_file,
        "output_dir": tmp_path,
        "backend": None,
    }
    return UncertaintyParams.model_validate(base | kw)


@pytest.fixture(scope="module")
def edge_without_dapi(tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("edge-no-dapi")
    envelope = root / "envelope.yaml"
    envelope.write_text(
        yaml.safe_dump(
            {
                "allowed_channels": ["BF", "GFP"],
                "channel_power_mw": {"BF": 0.0, "GFP": 30.0},
            }
        )
    )
    edge = EdgeProcess(
        root / "edge", extra_args=["--camera-size", "256", "--envelope", str(envelope)]
    ).start()
    yield edge
    edge.stop()


def test_an_envelope_that_forbids_the_expensive_channel_refuses_before_anything_moves(
    prefect_harness, edge_without_dapi: EdgeProcess, tmp_path: Path
) -> None:
    from flows.uncertainty_triggered import uncertainty_triggered

    with EdgeClient(edge_without_dapi.url, token_file=edge_without_dapi.token_file) as client:
        before = client.state()
        with pytest.raises(ConfigurationError, match=r"forbids the expensive channel \(DAPI"):
            uncertainty_triggered(_params(edge_without_dapi, tmp_path))
        after = client.state()
    assert after.frames_journaled == before.frames_journaled
    assert (after.stage.x, after.stage.y) == (before.stage.x, before.stage.y)


def test_missing_weights_stop_the_flow_with_the_training_command(
    prefect_harness, edge_without_dapi: EdgeProcess, tmp_path: Path
) -> None:
    from flows.uncertainty_triggered import uncertainty_triggered

    params = _params(
        edge_without_dapi, tmp_path, model_options={"weights": str(tmp_path / "gone.pt")}
    )
    with pytest.raises(ConfigurationError, match=r"train_virtual_stain --seed 0"):
        uncertainty_triggered(params)


def test_params_that_make_no_sense_are_refused_with_the_fix(tmp_path: Path) -> None:
    base = {"positions": [{"name": "a", "x_um": 1.0, "y_um": 1.0}]}
    with pytest.raises(ValueError, match="both 'DAPI'"):
        UncertaintyParams.model_validate(base | {"cheap": {"channel": "DAPI", "exposure_ms": 5.0}})
    with pytest.raises(ValueError, match="fallback_model 'classical' differs"):
        UncertaintyParams.model_validate(base | {"fallback_model": "classical"})
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        UncertaintyParams.model_validate(base | {"threshold": -0.5})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base | {"protocol": "sometimes"}))
    done = subprocess.run(
        [sys.executable, "-m", "scopeflow", "run", "uncertainty", "--params", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode != 0
    assert "not valid" in done.stderr and "protocol" in done.stderr
