"""Acquisition-parameter optimisation: the exposure, intensity and binning that give the best
image for the light spent, found by Bayesian optimisation (optuna's Gaussian process) with real
acquisitions.

Phases are Prefect tasks; each is the closed-loop core (``tasks.live.run_edge_phase``): the pure
``ParameterSearchPolicy`` (``tasks.decisions``) asks its suggester for the next settings, the
command sink sends the acquisition (a fresh field per trial, so no trial bleaches another's
cells) with the id ``<run>.<phase>.trial<n>``, the frame's quality is scored on Ray/Dask workers
(``tasks.qc.measure_object_quality``: contrast-to-noise of the segmented objects, saturation,
pixels per object; no ground truth), and the policy scores it less the light dose from the
envelope's accounting. The ``grid`` phase is the static baseline over the same ranges, in the
same run; the ``optimise`` phase gets 25 % of the grid's acquisitions. A re-run under the same
``run_id`` replays the decision logs: the suggesters are pure functions of the trials so far,
so no acquisition is repeated. The frames are stored as OME-Zarr, the history and the parameter
landscape become artifacts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import useq
from prefect import flow, task
from prefect.artifacts import (
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from scopeflow import SetIllumination
from tasks.decisions import (
    GridSuggester,
    OptunaSuggester,
    ParameterSearchPolicy,
    SearchObjective,
    SearchState,
    Suggester,
)
from tasks.hardware import SafetyEnvelope
from tasks.live import Analyzer, AnalyzerSettings, command_id, run_edge_phase
from tasks.qc import QCWorkers, measure_object_quality
from tasks.storage import write_zstack

from ._artifacts import publish_png, publish_summary
from ._microscope_run import microscope_run
from ._optimise_params import OptimiseAcquisitionParams
from ._optimise_plots import render_history_png, render_landscape_png
from ._run_id import default_run_id

__all__ = ["SearchOutcome", "optimise_acquisition"]

_NOT_IN_TABLE = ("stores", "best_trial", "grid_best_trial")


@dataclass(frozen=True)
class SearchOutcome:
    """What one search phase leaves (small: numbers and paths)."""

    phase: str
    trials: list[dict[str, Any]]
    stopped: str | None
    dose_mj: float
    decisions_path: Path
    scored_here: int = 0  # frames scored in this process (workers busy or failed), not remote


@task(name="prepare-optimise", cache_policy=NO_CACHE)
def prepare_optimise(params: OptimiseAcquisitionParams) -> tuple[float, float | None]:
    """Refuse ranges outside the edge's envelope before anything moves; switch the objective;
    the channel's power at 100 % (mW) from the envelope, for the dose of each trial, and the
    intensity in force (given back at the end)."""
    with params.connect() as edge:
        edge.wait_until_idle()
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        params.check_envelope(envelope)
        edge.set_objective(params.objective)
        power = envelope.power_mw(params.channel, f"channel {params.channel}")
        return power, edge.state().intensity


@task(name="restore-settings", cache_policy=NO_CACHE)
def restore_settings(
    params: OptimiseAcquisitionParams, run_id: str, intensity: float | None
) -> None:
    """Leave the microscope as the next run expects it: binning 1 (set by one frame at 0 %
    intensity: no light; the edge has no direct binning command) and the intensity it had."""
    with params.connect() as edge:
        if params.binnings != [1]:
            dark = useq.MDAEvent(
                channel=params.channel,
                exposure=params.exposure_ms.low,
                properties=[("Illumination", "Intensity", 0.0), ("Camera", "Binning", 1)],
            )
            edge.submit_events([dark], command_id=command_id(run_id, "restore", "binning"))
            edge.wait_until_idle()
        if intensity is not None:
            edge.command(
                SetIllumination(intensity=intensity),
                command_id=command_id(run_id, "restore", "intensity"),
            )


@task(name="search", cache_policy=NO_CACHE)
def search(
    params: OptimiseAcquisitionParams,
    phase: str,
    run_id: str,
    run_dir: Path,
    power_mw: float,
    dose_used_mj: float,
    workers: QCWorkers,
) -> SearchOutcome:
    """One search (the grid, or the optimiser) as a live loop: trial after trial."""
    grid = params.grid()
    fields = params.fields()
    if phase == "grid":
        suggester: Suggester = GridSuggester(grid)
        trials, in_flight, fields = len(grid), 4, fields[: len(grid)]
    else:
        suggester = OptunaSuggester(
            params.space(), seed=params.seed, startup=params.startup_count(), sampler=params.sampler
        )
        skip = len(grid) if params.run_grid else 0
        trials, in_flight, fields = params.trial_count(), 1, fields[skip:]
    budget = None
    if params.dose_budget_mj is not None:
        budget = max(0.0, params.dose_budget_mj - dose_used_mj)
    policy = ParameterSearchPolicy(
        suggester,
        SearchObjective(power_mw, params.dose_weight_per_mj),
        fields,
        max_trials=trials,
        channel=params.channel,
        z_um=params.z_um,
        in_flight=in_flight,
        dose_budget_mj=budget,
        binning_property=None if params.binnings == [1] else ("Camera", "Binning"),
    )
    decisions_path = run_dir / f"{phase}.jsonl"
    with params.connect() as edge:
        analyzer = Analyzer(
            workers,
            AnalyzerSettings(
                max_in_flight=max(in_flight, 2 * params.worker_count),
                local=lambda f: workers.measure_here(f.payload, f.header.pixel_size_um),
            ),
        )
        before = edge.state()
        report = run_edge_phase(
            edge,
            analyzer,
            policy,
            run_id=run_id,
            phase=phase,
            decisions_path=decisions_path,
            first_frame=before.frames_journaled,
            transport=params.transport,
        )
        dose = edge.state().light_dose.used_mj - before.light_dose.used_mj
    state: SearchState = report.state
    stopped = state.stop_reason
    if report.refused:
        refused = report.refused[0]
        stopped = f"the edge refused {refused.command_id}: {refused.refused}"
    elif report.failures:
        stopped = f"the edge failed an acquisition: {report.failures[0]}"
    scored_here = int(report.summary().get("fallback_decisions") or 0)
    return SearchOutcome(
        phase,
        [t.as_dict() for t in state.trials],
        stopped,
        round(dose, 4),
        decisions_path,
        scored_here,
    )


@task(name="store-trials", cache_policy=NO_CACHE)
def store_trials(
    params: OptimiseAcquisitionParams, run_dir: Path, outcomes: list[SearchOutcome]
) -> list[Path]:
    """One OME-Zarr per phase and binning: the trials' frames in trial order, their settings
    and scores in the store's attributes (a re-run keeps the stores it finds)."""
    stores: list[Path] = []
    with params.connect() as edge:
        for outcome in outcomes:
            by_binning: dict[int, list[dict[str, Any]]] = {}
            for trial in outcome.trials:
                by_binning.setdefault(int(trial["binning"]), []).append(trial)
            for binning, trials in sorted(by_binning.items()):
                store = run_dir / f"{outcome.phase}-bin{binning}.ome.zarr"
                if store.exists():  # a re-run: stores are written whole (renamed) or not at all
                    stores.append(store)
                    continue
                frames = [edge.frame(t["frame"]) for t in trials]
                stores.append(
                    write_zstack(
                        store,
                        np.stack([f.pixels for f in frames]),
                        pixel_size_um=frames[0].header.pixel_size_um,
                        t_step_s=1.0,
                        name=f"{outcome.phase} trials, binning {binning}",
                        channel=params.channel,
                        attributes={"trials": trials},
                    )
                )
    return stores


@task(name="summarise-optimise", cache_policy=NO_CACHE)
def summarise_optimise(
    params: OptimiseAcquisitionParams,
    run_dir: Path,
    grid: SearchOutcome | None,
    optimised: SearchOutcome,
    stores: list[Path],
    started: float,
) -> dict[str, Any]:
    """The optimiser against the grid, and the artifacts a person looks at."""
    best = max(optimised.trials, key=lambda t: t["score"], default=None)
    grid_best = max(grid.trials, key=lambda t: t["score"], default=None) if grid else None
    grid_n = len(grid.trials) if grid else params.grid_size()
    ratio = None
    reached_at = None
    if best and grid_best and grid_best["score"] > 0:
        ratio = round(best["score"] / grid_best["score"], 4)
        target = 0.95 * grid_best["score"]
        reached_at = next(
            (k + 1 for k, t in enumerate(optimised.trials) if t["score"] >= target), None
        )
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "trials": len(optimised.trials),
        "grid_acquisitions": len(grid.trials) if grid else 0,
        "best_quality": best["score"] if best else None,
        "grid_best_quality": grid_best["score"] if grid_best else None,
        "quality_ratio": ratio,
        "acquisitions_ratio": round(len(optimised.trials) / grid_n, 4) if grid_n else None,
        "trials_to_95pct": reached_at,
        "best_params": _params_of(best),
        "grid_best_params": _params_of(grid_best),
        "best_image_quality": best["quality"] if best else None,
        "best_trial": best,
        "grid_best_trial": grid_best,
        "dose_mj": optimised.dose_mj,
        "grid_dose_mj": grid.dose_mj if grid else None,
        "scored_here": sum(o.scored_here for o in (grid, optimised) if o),
        "stopped": {o.phase: o.stopped for o in (grid, optimised) if o and o.stopped} or None,
        "stores": [str(s) for s in stores],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    grid_trials = grid.trials if grid else []
    history = render_history_png(
        [t["score"] for t in optimised.trials], grid_best["score"] if grid_best else None
    )
    landscape = render_landscape_png(grid_trials, optimised.trials, params.space())
    for name, png, key, description in (
        ("history.png", history, "optimise-history", "Score per trial, the grid's optimum"),
        ("landscape.png", landscape, "optimise-landscape", "Score over exposure x intensity"),
    ):
        publish_png(png, key=key, description=description, path=run_dir / name)
    create_table_artifact(optimised.trials, key="optimise-trials", description="Trials")
    publish_summary(
        "Acquisition optimisation",
        summary,
        key="optimise-summary",
        description="Optimiser against the grid search: score, acquisitions, dose",
        leave_out=("stores", "best_trial", "grid_best_trial"),
    )
    return summary


@flow(name="optimise-acquisition", log_prints=True)
def optimise_acquisition(params: OptimiseAcquisitionParams) -> dict[str, Any]:
    """Prepare -> grid (baseline) -> optimise -> store -> summarise."""
    started = time.perf_counter()
    with microscope_run(params, params.run_id or default_run_id("optimise")) as run:
        run_id, run_dir = run.run_id, run.run_dir
        power, intensity = prepare_optimise(params)
        workers = run.keep(
            QCWorkers(
                params.workers,
                workers=params.worker_count,
                measure=measure_object_quality,
                measure_args=(params.quality_scale(),),
            )
        )
        used = 0.0
        grid = None
        if params.run_grid:
            grid = search(params, "grid", run_id, run_dir, power, used, workers)
            used += grid.dose_mj
        if grid is not None and grid.stopped:
            optimised = SearchOutcome("optimise", [], "the grid stopped first", 0.0, run_dir)
        else:
            optimised = search(params, "optimise", run_id, run_dir, power, used, workers)
        stores = store_trials(params, run_dir, [o for o in (grid, optimised) if o is not None])
        restore_settings(params, run_id, intensity)
    return summarise_optimise(params, run_dir, grid, optimised, stores, started)


def _params_of(trial: dict[str, Any] | None) -> dict[str, Any] | None:
    if trial is None:
        return None
    return {k: trial[k] for k in ("exposure_ms", "intensity_pct", "binning")}
