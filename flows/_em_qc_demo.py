"""The EM QC demo: a simulated SEM writes a tiled region into a folder at its own pace, with a
few faults injected; the ``em-qc`` flow judges each tile as it completes, writes the region's
OME-Zarr and the QC report, and the demo scores the verdicts against the injected faults."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tasks.qc import EMMosaicSimulator, Fault, Verdict, score_verdicts, write_sem_tiff

from ._em_qc_params import EMQCParams

__all__ = ["DEMO_FAULTS", "run_em_qc_demo"]

ROWS, COLS, TILE = 6, 6, 1024
# tile index -> fault: one of each kind, after the first tile (which anchors the mosaic)
DEMO_FAULTS: dict[int, tuple[Fault, ...]] = {
    3: ("defocus",),
    8: ("charging",),
    13: ("astigmatism",),
    16: ("truncated",),
    19: ("drift",),
    22: ("noise",),
    25: ("scan_lines",),
    28: ("brightness",),
    31: ("saturation",),
    34: ("contrast",),
}


def _microscope(folder: Path, seed: int, interval_s: float) -> None:
    """The simulated SEM (another process): each tile rendered, then written in place in
    pieces (as SmartSEM does), one every ``interval_s``."""
    sim = EMMosaicSimulator(rows=ROWS, cols=COLS, tile=TILE, seed=seed, faults=DEMO_FAULTS)
    staging = folder.parent / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    for tile in sim.tiles():
        started = time.monotonic()
        staged = write_sem_tiff(staging / tile.name, tile)
        data = staged.read_bytes()
        with (folder / tile.name).open("wb") as fh:
            for i in range(0, len(data), len(data) // 4 + 1):
                fh.write(data[i : i + len(data) // 4 + 1])
                fh.flush()
                time.sleep(0.02)
        staged.unlink()
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


def run_em_qc_demo(
    data_dir: Path,
    *,
    backend: str = "threads",
    seed: int = 0,
    interval_s: float = 0.5,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run it end to end; return the summary (the CLI's ``--json``)."""
    from .em_qc import _LIVE, add_anomaly_hook, em_qc, remove_anomaly_hook

    console = Console(stderr=True, quiet=quiet)
    started = time.perf_counter()
    run_dir = data_dir / datetime.now(UTC).strftime("em-qc-demo-%Y%m%dT%H%M%SZ")
    folder = run_dir / "microscope" / "region-01"
    folder.mkdir(parents=True)
    workers = backend if backend in ("threads", "ray", "dask") else "threads"
    params = EMQCParams(
        folder=folder.parent,
        output=run_dir / "qc",
        workers=workers,  # type: ignore[arg-type]
        idle_stop_s=120.0,  # only if the simulated SEM died: the run has a known size
        expected_images=ROWS * COLS,
        stable_s=0.2,
        run_id=run_dir.name,
    )
    from prefect import flow

    with console.status("starting Prefect..."):
        flow(name="warm-up")(lambda: None)()  # Prefect's local server starts here, not mid-run
    fired: list[Verdict] = []
    add_anomaly_hook(fired.append)
    writer = multiprocessing.get_context("spawn").Process(
        target=_microscope, args=(folder, seed, interval_s), name="simulated-sem"
    )
    total = ROWS * COLS
    with Progress(
        TextColumn("[bold]QC[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"), console=console, transient=quiet,
    ) as progress:  # fmt: skip
        bar = progress.add_task("tiles", total=total, last="")

        def show(verdict: Verdict) -> None:
            if not verdict.revised:
                progress.advance(bar)
            colour = {"ok": "green", "warn": "yellow", "fail": "red"}[verdict.level]
            text = verdict.summary()
            progress.update(bar, last=f"[{colour}]{text[:90]}[/]")
            if verdict.level != "ok":
                console.print(f"[{colour}]{text}[/]")

        _LIVE.append(show)
        writer.start()
        try:
            report = em_qc(params)
        finally:
            _LIVE.remove(show)
            remove_anomaly_hook(fired.append)
            writer.join(timeout=120)
    sim_truth = {  # keys as the verdicts name the images: relative to the watched folder
        f"{folder.name}/{EMMosaicSimulator.tile_name(i, i // COLS, i % COLS)}": DEMO_FAULTS.get(
            i, ()
        )
        for i in range(total)
    }
    score = score_verdicts(report.verdicts, sim_truth)
    latency = report.latency_summary()
    summary = {
        "run_id": params.run_id,
        "tiles": len(report.verdicts),
        "anomalies_true": score.anomalies_true,
        "recall_by_kind": {k: round(v, 3) for k, v in score.recall_by_kind.items()},
        "false_alarm_rate": round(score.false_alarm_rate, 4),
        "verdict_latency_ms": {"p50": latency["p50"], "p99": latency["p99"]},
        "events_emitted": len(fired),
        "levels": report.levels(),
        "stores": report.stores,
        "store_errors": report.store_errors,
        "missed": score.missed,
        "false_alarms": score.false_alarms,
        "analysed": report.analysed_where,
        "run_dir": str(run_dir),
        "prefect_flow_run_id": report.run_info.get("prefect_flow_run_id"),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    console.print(
        f"{summary['tiles']} tiles, {len(fired)} anomalies fired, recall by kind "
        f"{summary['recall_by_kind']}, false alarms {summary['false_alarm_rate']:.1%}, "
        f"latency p50/p99 {latency['p50']}/{latency['p99']} ms; stores: {report.stores}"
    )
    return summary
