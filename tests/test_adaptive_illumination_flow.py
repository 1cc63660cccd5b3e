"""The adaptive-illumination flow end to end: a real simulated edge process per seed (dim and
bright nuclei, a bleaching dye), the real Prefect server, the model on a local Ray worker;
scored on the simulator's ground truth against the static protocol set for the dimmest cell.
Bad input on real edge processes: an envelope that forbids the light the run may choose, and
a light-dose budget that runs out mid-run and survives the edge being killed."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import AdaptiveIlluminationParams, run_illumination_demo
from scopeflow import ConfigurationError
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import DecisionLog

from ._prefect_artifacts import artifact_keys_on_server
from .conftest import validate_store

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(600)]  # minutes of simulated runs

SEEDS = (0, 1, 2)
SNR_GOAL = 0.90  # issue 14: the target SNR in >= 90 % of frames ...
DOSE_GOAL = 0.50  # ... at <= 50 % of the static (dimmest-cell) protocol's light dose

ENVELOPE = """\
max_exposure_ms: 500.0
max_intensity_percent: {intensity}
light_dose_budget_mj: {budget}
channel_power_mw: {{BF: 0.0, DAPI: 20.0, GFP: 30.0}}
"""


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory) -> list[dict[str, Any]]:
    data = tmp_path_factory.mktemp("adaptive-illumination")
    return [run_illumination_demo(data, seed=seed, quiet=True) for seed in SEEDS]


def _figures(runs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r["seed"], r["snr_reached_fraction"], r["dose_ratio"],
         r["bleaching"]["remaining_adaptive_mean"], r["bleaching"]["remaining_static_mean"])
        for r in runs
    ]  # fmt: skip


def test_every_seed_ran_every_frame_with_the_edges_dose(runs: list[dict[str, Any]]) -> None:
    for summary in runs:
        assert summary["frames"] == summary["frames_static"] == 6 * 20, summary
        for key in ("snr_reached_fraction", "dose_mj", "dose_fixed_mj", "dose_ratio", "stores",
                    "wall_s", "bleaching"):  # fmt: skip
            assert summary[key] is not None, key
        # the edge's own dose account agrees with the frames' settings
        assert summary["dose_mj"] == pytest.approx(summary["dose_frames_mj"], rel=1e-3)
        assert not summary["stopped"] and not summary["refused"] and not summary["capped"]
        json.dumps(summary)  # what `scopeflow demo adaptive-illumination --json` prints


def test_the_target_snr_is_reached_in_90_percent_of_frames_on_every_seed(
    runs: list[dict[str, Any]],
) -> None:
    assert all(r["snr_reached_fraction"] >= SNR_GOAL for r in runs), _figures(runs)
    # the static protocol misses it as its dimmest cell bleaches
    assert all(r["snr_reached_fraction_static"] < r["snr_reached_fraction"] for r in runs)


def test_the_dose_is_at_most_half_the_static_protocols_on_every_seed(
    runs: list[dict[str, Any]],
) -> None:
    assert all(r["dose_ratio"] <= DOSE_GOAL for r in runs), _figures(runs)


def test_the_cells_bleach_less_than_under_the_static_protocol(runs: list[dict[str, Any]]) -> None:
    for r in runs:
        b = r["bleaching"]
        assert b["remaining_adaptive_mean"] > b["remaining_static_mean"], _figures(runs)
        assert set(b["remaining_adaptive"]) == set(b["remaining_static"])
        assert all(0.0 < v <= 1.0 for v in b["remaining_adaptive"].values())


def test_the_stores_decisions_and_charts_are_kept(runs: list[dict[str, Any]]) -> None:
    run_dir = Path(runs[0]["run_dir"])
    records = [r for r in DecisionLog.read(run_dir / "decisions.jsonl") if r["type"] == "decision"]
    assert len(records) == runs[0]["frames"]
    ids = [c["id"] for r in records for c in r["commands"]]
    assert len(ids) == len(set(ids)) and all(".illum.p" in i for i in ids)
    exposures = {r["decision"]["exposure_ms"] for r in records}
    assert len(exposures) > 6  # the light differs between cells and over time
    assert len(runs[0]["stores"]) == 6
    store = Path(runs[0]["stores"][0])
    validate_store(store)
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]["scopeflow"]
    assert len(attrs["exposure_ms"]) == len(attrs["snr"]) == 20
    for name in ("light.png", "dose.png", "dose-vs-static.png", "light-vs-static.png"):
        assert (run_dir / name).stat().st_size > 1000


def test_the_run_shows_its_artifacts_in_prefect(runs: list[dict[str, Any]]) -> None:

    expected = {
        "illumination-summary",
        "illumination-light",
        "illumination-dose",
        "illumination-positions",
        "illumination-loop-latency",
    }
    assert artifact_keys_on_server(expected) == expected


# -- bad input -------------------------------------------------------------------------------


def _edge(data_dir: Path, *, budget: float = 100_000.0, intensity: float = 100.0) -> EdgeProcess:
    envelope = data_dir.parent / f"{data_dir.name}-envelope.yaml"
    envelope.write_text(ENVELOPE.format(budget=budget, intensity=intensity))
    args = ["--camera-size", "96", "--envelope", str(envelope)]
    return EdgeProcess(data_dir, extra_args=args, startup_timeout=240).start()


def _params(edge: EdgeProcess, tmp_path: Path, **kw: Any) -> AdaptiveIlluminationParams:
    base: dict[str, Any] = {
        "positions": [
            {"name": "a", "x_um": 5000.0, "y_um": 5000.0},
            {"name": "b", "x_um": 5300.0, "y_um": 5000.0},
        ],
        "time_points": 12,
        "interval_s": 0.3,
        "exposure_range_ms": (2.0, 400.0),
        "edge_url": edge.url,
        "edge_token_file": edge.token_file,
        "output_dir": tmp_path,
        "backend": None,
    }
    return AdaptiveIlluminationParams.model_validate(base | kw)


def _empty_positions(count: int) -> list[dict[str, Any]]:
    """Positions of the default simulated slide (seed 0) with no cell within 45 µm."""
    import numpy as np

    from tasks.hardware.sim import SimulatorConfig, VirtualSample

    cells = VirtualSample(SimulatorConfig(seed=0)).cells_at(0.0, (4000, 4000, 6000, 6000))
    out: list[dict[str, Any]] = []
    for x in np.arange(4200.0, 5800.0, 100.0):
        if len(out) == count:
            break
        if np.hypot(cells.x_um - x, cells.y_um - 5000.0).min() > 45.0:
            out.append({"name": f"empty-{len(out)}", "x_um": float(x), "y_um": 5000.0})
    assert len(out) == count
    return out


def test_an_envelope_that_forbids_the_light_stops_the_run_before_any_light(
    prefect_harness, tmp_path: Path
) -> None:
    from flows.adaptive_illumination import adaptive_illumination

    edge = _edge(tmp_path / "edge", intensity=20.0)
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            before = client.state()
            with pytest.raises(
                ConfigurationError, match=r"forbids what this run may ask for.*intensity.*20"
            ):
                adaptive_illumination(_params(edge, tmp_path))
            with pytest.raises(ConfigurationError, match=r"max_exposure_ms.*narrow"):
                wide = {"exposure_range_ms": (2.0, 1000.0), "intensity_range_percent": (0.5, 20.0)}
                adaptive_illumination(_params(edge, tmp_path, **wide))
            after = client.state()
        assert after.frames_acquired == before.frames_acquired == 0
        assert after.light_dose.used_mj == before.light_dose.used_mj == 0.0
        # inside the envelope, the same run goes ahead
        summary = adaptive_illumination(
            _params(edge, tmp_path, intensity_range_percent=(0.5, 20.0), time_points=2)
        )
        assert summary["frames"] == 4 and not summary["stopped"]
    finally:
        edge.stop()


def test_a_budget_exhausted_mid_run_stops_with_the_reason_and_survives_a_killed_edge(
    prefect_harness, tmp_path: Path
) -> None:
    from flows.adaptive_illumination import adaptive_illumination

    data_dir = tmp_path / "edge"
    # two places without a cell: the policy, finding none, asks 4-fold more light each frame
    # (10 ms at 2 %: 0.004 mJ, then 0.016, 0.064, ...), so the budget runs out by construction
    empty = _empty_positions(2)
    budget = 0.12
    edge = _edge(data_dir, budget=budget)
    try:
        summary = adaptive_illumination(_params(edge, tmp_path / "run1", positions=empty))
    finally:
        edge.stop(sig=signal.SIGKILL)  # killed, not asked to stop: the ledger is on disk
    assert 0 < summary["frames"] < 2 * 12, summary
    assert summary["stopped"], summary
    for why in summary["stopped"].values():
        assert "light dose" in why and "light_dose_budget_mj" in why, why
    assert summary["dose_used_on_edge_mj"] <= budget + 1e-9
    # the frames and decisions so far are kept
    records = DecisionLog.read(Path(summary["run_dir"]) / "decisions.jsonl")
    assert sum(r["type"] == "decision" for r in records) == summary["frames"]
    assert summary["stores"]
    for store in summary["stores"]:
        validate_store(Path(store))

    edge = _edge(data_dir, budget=budget)  # the same sample's data dir, after a kill
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            state = client.state()
            assert state.light_dose.used_mj == pytest.approx(summary["dose_used_on_edge_mj"])
        again = adaptive_illumination(_params(edge, tmp_path / "run2", positions=empty))
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            assert client.state().light_dose.used_mj <= budget + 1e-9
    finally:
        edge.stop()
    assert again["dose_mj"] <= budget - summary["dose_used_on_edge_mj"] + 1e-9
    assert again["frames"] < summary["frames"]  # at most what the little left allows
    assert set(again["stopped"]) == {"empty-0", "empty-1"}
    assert all("light dose" in why for why in again["stopped"].values())


def test_run_from_a_params_file_holds_the_static_protocols_light(
    prefect_harness, edge: EdgeProcess, tmp_path: Path
) -> None:
    """`scopeflow run adaptive-illumination --params FILE.yaml`, with `adapt: false`: the same
    light at every frame (the static protocol the flow is compared with)."""
    from typer.testing import CliRunner

    from scopeflow.cli import app

    params = {
        "positions": [{"name": "a", "x_um": 5000.0, "y_um": 5000.0}],
        "time_points": 3,
        "interval_s": 0.3,
        "adapt": False,
        "start": {"exposure_ms": 8.0, "intensity_percent": 3.0},
        "backend": None,
        "output_dir": str(tmp_path),
    }
    path = tmp_path / "illumination.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(
        app,
        ["run", "adaptive-illumination", "--params", str(path), "--edge-url", edge.url,
         "--token-file", str(edge.token_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 3
    records = DecisionLog.read(Path(summary["run_dir"]) / "decisions.jsonl")
    settings = {
        (r["decision"]["exposure_ms"], r["decision"]["intensity_percent"])
        for r in records
        if r["type"] == "decision"
    }
    assert settings == {(8.0, 3.0)}
    assert summary["dose_mj"] == pytest.approx(3 * 20.0 * 0.03 * 8.0 / 1000, rel=1e-3)


def test_params_that_make_no_sense_are_refused_with_the_fix(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scopeflow.cli import app

    base = {"positions": [{"name": "a", "x_um": 1.0, "y_um": 1.0}]}
    with pytest.raises(ValueError, match="inside the exposure and intensity ranges"):
        AdaptiveIlluminationParams.model_validate(base | {"start": {"exposure_ms": 900.0}})
    with pytest.raises(ValueError, match=r"extra_forbidden|Extra inputs"):
        AdaptiveIlluminationParams.model_validate(base | {"target": 5})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base | {"target_snr": -1}))
    result = CliRunner().invoke(app, ["run", "adaptive-illumination", "--params", str(path)])
    assert result.exit_code == 2 and "target_snr" in result.output
