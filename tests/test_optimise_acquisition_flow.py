"""The acquisition-optimisation flow end to end: a real simulated edge process per seed, the
real Prefect server, frames scored on a local Ray or Dask worker; the optimiser against the
grid search measured in the same run, and the ground-truth accuracy of both best frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import OptimiseAcquisitionParams, run_optimise_demo
from scopeflow import ConfigurationError
from tasks.decisions import OptunaSuggester
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import DecisionLog

from ._prefect_artifacts import artifact_keys_on_server
from .conftest import validate_store

# three demo runs (~2 min each on 2 busy cores)
pytestmark = [pytest.mark.heavy, pytest.mark.timeout(1500)]

SEEDS = (0, 1, 2)
QUALITY_GOAL = 0.95  # issue 14: >= 95 % of the grid-search optimum ...
ACQUISITIONS_GOAL = 0.25  # ... in <= 25 % of the grid's acquisitions


@pytest.fixture(scope="module")
def runs(prefect_harness, tmp_path_factory) -> list[dict[str, Any]]:
    data = tmp_path_factory.mktemp("optimise")
    return [
        run_optimise_demo(data, backend="dask" if seed == 1 else "ray", seed=seed, quiet=True)
        for seed in SEEDS
    ]


def _figures(runs: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    return [(r["seed"], r["quality_ratio"], r["acquisitions_ratio"]) for r in runs]


def test_the_optimiser_reaches_95_percent_of_the_grid_optimum_in_25_percent_of_its_acquisitions(
    runs: list[dict[str, Any]],
) -> None:
    for r in runs:
        assert r["grid_acquisitions"] == 120 and r["trials"] == 30
        assert r["acquisitions_ratio"] <= ACQUISITIONS_GOAL, _figures(runs)
        assert r["quality_ratio"] >= QUALITY_GOAL, _figures(runs)


def test_every_trial_is_a_real_acquisition_on_its_own_field_with_the_edges_dose(
    runs: list[dict[str, Any]],
) -> None:
    for r in runs:
        run_dir = Path(r["run_dir"])
        for phase, n, dose in (("grid", 120, r["grid_dose_mj"]), ("optimise", 30, r["dose_mj"])):
            records = [x for x in DecisionLog.read(run_dir / f"{phase}.jsonl")]
            decided = [x for x in records if x["type"] == "decision"]
            assert len(decided) == n
            ids = [c["id"] for x in decided for c in x["commands"]]
            assert len(ids) == len(set(ids)) and all(f".{phase}.trial" in i for i in ids)
            assert len({tuple(x["stage"][:2]) for x in decided}) == n  # a fresh field each
            # the edge's own dose account agrees with the dose each trial was charged
            charged = sum(x["decision"]["dose_mj"] for x in decided)
            assert dose == pytest.approx(charged, rel=1e-3, abs=1e-3)
        assert not r["stopped"]
        assert r["dose_mj"] < r["grid_dose_mj"]


def test_the_ground_truth_accuracy_of_the_best_frames_is_reported(
    runs: list[dict[str, Any]],
) -> None:
    """The score never sees ground truth; the best frames still segment well against it."""
    for r in runs:
        assert r["best_truth_f1"] >= 0.75, r
        assert r["grid_best_truth_f1"] >= 0.75, r


def test_the_stores_are_valid_and_the_run_shows_its_artifacts(
    runs: list[dict[str, Any]],
) -> None:

    store = Path(runs[0]["stores"][-1])
    validate_store(store)
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]["scopeflow"]
    assert attrs["trials"] and "score" in attrs["trials"][0]
    assert (Path(runs[0]["run_dir"]) / "history.png").stat().st_size > 0
    expected = {"optimise-summary", "optimise-history", "optimise-landscape"}
    assert artifact_keys_on_server(expected) == expected


def _params(edge: EdgeProcess, tmp_path: Path, **kw: Any) -> OptimiseAcquisitionParams:
    base: dict[str, Any] = {
        "region": {"x0": 1000.0, "y0": 6000.0, "x1": 9000.0, "y1": 6400.0},
        "grid_exposures": 2,
        "grid_intensities": 2,
        "trials": 3,
        "startup_trials": 2,
        "workers": "threads",
        "edge_url": edge.url,
        "edge_token_file": edge.token_file,
        "output_dir": tmp_path,
    }
    return OptimiseAcquisitionParams.model_validate(base | kw)


def test_a_rerun_under_the_same_run_id_repeats_no_acquisition(
    prefect_harness, edge: EdgeProcess, client: EdgeClient, tmp_path: Path
) -> None:
    from flows.optimise_acquisition import optimise_acquisition

    params = _params(edge, tmp_path, run_id="optimise-resume-test")
    first = optimise_acquisition(params)
    state = client.state()
    again = optimise_acquisition(params)
    after = client.state()
    assert after.frames_journaled == state.frames_journaled  # nothing acquired twice
    assert after.light_dose.used_mj == pytest.approx(state.light_dose.used_mj)
    assert again["best_params"] == first["best_params"]
    assert again["best_quality"] == first["best_quality"]
    assert (first["trials"], first["grid_acquisitions"]) == (3, 4)


def test_ranges_outside_the_envelope_are_refused_naming_its_limit_before_anything_moves(
    prefect_harness, edge: EdgeProcess, client: EdgeClient, tmp_path: Path
) -> None:
    from flows.optimise_acquisition import optimise_acquisition

    before = client.state()
    with pytest.raises(ConfigurationError, match=r"max_exposure_ms 2000.*nothing was acquired"):
        optimise_acquisition(_params(edge, tmp_path, exposure_ms={"low": 1.0, "high": 5000.0}))
    with pytest.raises(ConfigurationError, match=r"Camera.Binning in the envelope's allowed_prop"):
        optimise_acquisition(_params(edge, tmp_path, binnings=[1, 2]))
    far = {"x0": 1000.0, "y0": 6000.0, "x1": 20_000.0, "y1": 6400.0}
    with pytest.raises(ConfigurationError, match=r"outside the envelope's x_limits_um"):
        optimise_acquisition(_params(edge, tmp_path, region=far, field_spacing_um=2500.0))
    after = client.state()
    assert after.frames_journaled == before.frames_journaled
    assert (after.stage.x, after.stage.y) == (before.stage.x, before.stage.y)


def test_params_that_make_no_sense_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be below high"):
        OptimiseAcquisitionParams(exposure_ms={"low": 10.0, "high": 1.0})
    with pytest.raises(ValueError, match="widen the region"):
        OptimiseAcquisitionParams(region={"x0": 0.0, "y0": 0.0, "x1": 500.0, "y1": 500.0})
    with pytest.raises(ValueError, match="distinct binnings"):
        OptimiseAcquisitionParams(binnings=[1, 1])
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"binnings": [1, 2], "trials": 12}))
    loaded = OptimiseAcquisitionParams.model_validate(yaml.safe_load(path.read_text()))
    assert loaded.grid_size() == 80 and loaded.trial_count() == 12


def test_the_runs_dose_budget_stops_it_with_the_reason_and_keeps_the_trials(
    prefect_harness, edge: EdgeProcess, tmp_path: Path
) -> None:
    from flows.optimise_acquisition import optimise_acquisition

    params = _params(edge, tmp_path, run_grid=False, trials=6, startup_trials=6)
    doses = _startup_doses(params, 6)
    budget = sum(doses[:3]) + 1e-6  # trial 3 does not fit
    summary = optimise_acquisition(params.model_copy(update={"dose_budget_mj": budget}))
    assert summary["trials"] == 3
    assert "dose budget: trial 3 needs" in summary["stopped"]["optimise"]
    assert summary["dose_mj"] <= budget + 1e-4  # the summary rounds to 0.1 µJ


def test_an_edge_whose_dose_budget_runs_out_mid_run_stops_it_and_the_trials_are_kept(
    prefect_harness, tmp_path: Path
) -> None:
    """The edge's own envelope refuses the trial that would pass its light-dose budget."""
    from flows.optimise_acquisition import optimise_acquisition

    probe = OptimiseAcquisitionParams(run_grid=False, trials=6, startup_trials=6)
    doses = _startup_doses(probe, 6)
    envelope = tmp_path / "envelope.yaml"
    envelope.write_text(yaml.safe_dump({"light_dose_budget_mj": sum(doses[:3]) + 1e-6}))
    args = ["--camera-size", "256", "--time-scale", "0", "--envelope", str(envelope)]
    with EdgeProcess(tmp_path / "edge", extra_args=args) as edge:
        summary = optimise_acquisition(
            _params(edge, tmp_path, run_grid=False, trials=6, startup_trials=6)
        )
    assert summary["trials"] == 3, summary
    assert "light_dose_budget_mj" in summary["stopped"]["optimise"]
    assert "trial0003" in summary["stopped"]["optimise"]


def _startup_doses(params: OptimiseAcquisitionParams, n: int) -> list[float]:
    """The doses of the first ``n`` (random start-up) trials: they depend on the seed only."""
    suggester = OptunaSuggester(
        params.space(), seed=params.seed, startup=params.startup_count(), sampler=params.sampler
    )
    settings = [suggester.suggest((), k) for k in range(n)]
    return [20.0 * s.intensity_pct / 100 * s.exposure_ms / 1000 for s in settings]


def test_scopeflow_run_optimise_runs_a_params_file_against_an_edge(
    prefect_harness, edge: EdgeProcess, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from scopeflow.cli import app

    path = tmp_path / "optimise.yaml"
    params = _params(edge, tmp_path, run_grid=False, trials=2).model_dump(mode="json")
    path.write_text(yaml.safe_dump({k: v for k, v in params.items() if "edge" not in k}))
    result = CliRunner().invoke(
        app,
        ["run", "optimise", "--params", str(path), "--edge-url", edge.url,
         "--token-file", str(edge.token_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 2 and summary["grid_acquisitions"] == 0
    assert summary["best_params"]["binning"] == 1


def test_scopeflow_run_optimise_names_a_bad_range(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scopeflow.cli import app

    path = tmp_path / "optimise.yaml"
    path.write_text(yaml.safe_dump({"intensity_pct": {"low": 50.0, "high": 5.0}}))
    result = CliRunner().invoke(app, ["run", "optimise", "--params", str(path)])
    assert result.exit_code == 2
    assert "range low 50 must be below high 5" in result.output


def test_without_binning_10_trials_reach_95_percent_of_the_grid_optimum(
    prefect_harness, tmp_path: Path
) -> None:
    """Exposure x intensity only: a grid of 8 x 5 = 40, the optimiser 10 trials (3 of them
    random start-up, then the Gaussian process). Measured 101.3-101.8 % on these seeds and
    95.2-103.9 % on seeds 3-5 (README: Acquisition optimisation)."""
    runs = [run_optimise_demo(tmp_path, seed=seed, quiet=True, binnings=[1]) for seed in SEEDS]
    for r in runs:
        assert (r["grid_acquisitions"], r["trials"]) == (40, 10)
        assert r["acquisitions_ratio"] <= ACQUISITIONS_GOAL, _figures(runs)
        assert r["quality_ratio"] >= QUALITY_GOAL, _figures(runs)
