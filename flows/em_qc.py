"""QC of an EM acquisition as it happens: a watched folder -> QC on workers -> verdicts,
anomaly hooks, one OME-Zarr per region, and a QC report artifact.

Two Prefect tasks: ``qc-acquisition`` runs the whole stream (the per-image work is the
closed-loop core's analyzer over ``QCWorkers``, never a task per image) and ``qc-report``
publishes the report (counts, metric plots over the run, the failed tiles as thumbnails).
Anomalies reach ``on_anomaly`` callbacks registered in this process (``add_anomaly_hook``)
and the ``anomaly_hooks`` named in the parameters (import paths, for deployments).
"""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from scopeflow import ConfigurationError
from tasks.events import emit_qc_anomaly
from tasks.live import VENDOR_PROFILES, Analyzer, AnalyzerSettings, LiveFrame, WatchedFolderSource
from tasks.qc import ImageMetrics, QCConfig, QCJudge, QCReport, QCWorkers, Verdict, run_qc
from tasks.storage import TileSetWriter

from ._acquisition_report import queue_for_omero
from ._artifacts import publish_png
from ._em_qc_params import EMQCParams
from ._em_qc_plots import render_failed_thumbnails_png, render_metric_plots_png

__all__ = ["add_anomaly_hook", "em_qc", "remove_anomaly_hook"]

AnomalyHook = Callable[[Verdict], None]
_HOOKS: list[AnomalyHook] = []
_LIVE: list[Callable[[Verdict], None]] = []  # progress display of a demo


def add_anomaly_hook(hook: AnomalyHook) -> None:
    """Call ``hook(verdict)`` for every anomaly of every em-qc run in this process."""
    _HOOKS.append(hook)


def remove_anomaly_hook(hook: AnomalyHook) -> None:
    if hook in _HOOKS:
        _HOOKS.remove(hook)


def _each(callbacks: list[Callable[[Verdict], None]]) -> Callable[[Verdict], None]:
    def call(verdict: Verdict) -> None:
        for callback in callbacks:
            callback(verdict)

    return call


def anomaly_event(verdict: Verdict) -> None:
    """``scopeflow.qc.anomaly`` for one image (a folder image: automations notify; only
    frames from an edge are taken again)."""
    worst = verdict.worst
    emit_qc_anomaly(
        verdict.image,
        worst.metric if worst else "readable",
        worst.value if worst else None,
        threshold=worst.threshold if worst else None,
        verdict="warn" if verdict.level == "warn" else "fail",
        source="folder",
        run_id=verdict.run_id,
        detail={"summary": verdict.summary(), "verdict_id": verdict.id},
    )


def _imported_hooks(paths: tuple[str, ...]) -> list[AnomalyHook]:
    hooks = []
    for path in paths:
        module, _, name = path.partition(":")
        try:
            hook = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(
                f"anomaly hook {path!r} cannot be imported ({exc}); give "
                "'package.module:callable' importable where the flow runs"
            ) from exc
        hooks.append(hook)
    return hooks


class _StoreWriter:
    """Writes each finished tile into its region's OME-Zarr on a thread of its own (off the
    verdict path), reading the file again here."""

    def __init__(self, root: Path) -> None:
        self.writer = TileSetWriter(root)
        self.stores: set[str] = set()
        self.errors: list[str] = []
        self._queue: queue.Queue[LiveFrame | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="qc-stores", daemon=True)
        self._thread.start()

    def __call__(self, frame: LiveFrame, metrics: ImageMetrics, verdict: Verdict) -> None:
        if metrics.readable:
            self._queue.put(frame)

    def _run(self) -> None:
        while (frame := self._queue.get()) is not None:
            event = frame.header.event
            try:
                pixels = frame.pixels()
                path = self.writer.add(
                    str(event.get("region", "region")),
                    frame.header.tag or str(frame.index),
                    pixels,
                    pixel_size_um=frame.header.pixel_size_um
                    if event.get("pixel_size_known")
                    else None,
                    stage_x_um=frame.header.stage.x if event.get("stage_known") else None,
                    stage_y_um=frame.header.stage.y if event.get("stage_known") else None,
                )
                self.stores.add(str(path.parent))
            except Exception as exc:  # a tile that cannot be stored is reported, QC goes on
                self.errors.append(f"{frame.header.tag}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


@task(name="qc-acquisition", cache_policy=NO_CACHE)
def qc_acquisition(params: EMQCParams) -> QCReport:
    """Watch the folder until it is idle, judging every image as it completes."""
    config = QCConfig.load(params.config) if params.config else QCConfig()
    if params.learn_images:
        config = config.model_copy(update={"learn_images": params.learn_images})
    profile = VENDOR_PROFILES.get(params.profile)
    if profile is None:
        raise ConfigurationError(
            f"unknown vendor profile {params.profile!r}; choose one of {', '.join(VENDOR_PROFILES)}"
        )
    if params.stable_s is not None:
        rule = profile.rule.model_copy(update={"stable_s": params.stable_s})
        profile = profile.model_copy(update={"rule": rule})
    params.output.mkdir(parents=True, exist_ok=True)
    source = WatchedFolderSource(
        params.folder,
        profile=profile,
        ledger=params.output / "ingest.jsonl",
        idle_stop_s=params.idle_stop_s,
        stop_after=params.expected_images,
    )
    hooks = [*_HOOKS, *_imported_hooks(params.anomaly_hooks)]
    if params.emit_events:
        hooks.append(anomaly_event)
    stores = _StoreWriter(params.output) if params.write_stores else None
    with QCWorkers(params.workers, workers=params.worker_count) as workers:
        analyzer = Analyzer(
            workers,
            AnalyzerSettings(
                max_in_flight=2 * params.worker_count,
                local=lambda frame: workers.measure_here(frame.payload),
            ),
        )
        try:
            report = run_qc(
                source,
                analyzer,
                QCJudge(config, run_id=params.run_id or "em-qc"),
                on_verdict=_each(list(_LIVE)),
                on_anomaly=_each(hooks),
                on_tile=stores,
            )
        finally:
            analyzer.close()
            source.close()
            if stores is not None:
                stores.close()
    report.stores = sorted(stores.stores) if stores else []
    report.store_errors = stores.errors if stores else []
    return report


@task(name="qc-report", cache_policy=NO_CACHE)
def qc_report(report: QCReport, run_id: str) -> dict[str, Any]:
    """Counts and latencies as a table, the metrics over the run and the failed tiles."""
    levels = report.levels()
    latency = report.latency_summary()
    failed = [v for v in report.verdicts.values() if v.level == "fail"]
    lines = [
        f"# QC of {run_id}",
        "",
        "| images | ok | warn | fail | anomalies fired | latency p50 / p99 (ms) |",
        "|---|---|---|---|---|---|",
        f"| {len(report.verdicts)} | {levels['ok']} | {levels['warn']} | {levels['fail']} | "
        f"{report.anomalies_fired} | {latency['p50']} / {latency['p99']} |",
        "",
        "## Failed images",
        "",
        "| image | why |",
        "|---|---|",
        *[f"| {v.image} | {v.summary().split(': ', 1)[-1]} |" for v in failed[:100]],
    ]
    create_markdown_artifact(
        key="em-qc-report", markdown="\n".join(lines), description="QC verdicts of the run"
    )
    plots = render_metric_plots_png(report.metrics, report.verdicts)
    publish_png(
        plots,
        key="em-qc-metrics",
        description="Each metric over the run; red: failed, dashed: the learned failure limit",
    )
    thumbs = render_failed_thumbnails_png(report.thumbnails, report.verdicts)
    if thumbs is not None:
        publish_png(
            thumbs,
            key="em-qc-failed-tiles",
            description="The failed tiles, with the metric that failed worst",
        )
    return {"images": len(report.verdicts), **levels, "latency_ms": latency}


@flow(name="em-qc", log_prints=True)
def em_qc(params: EMQCParams) -> QCReport:
    """QC a microscope's output folder while it is written; returns the run's QC report."""
    from prefect.runtime import flow_run

    run_id = params.run_id or "em-qc"
    report = qc_acquisition(params)
    levels = qc_report(report, run_id)
    report.run_info["prefect_flow_run_id"] = str(flow_run.id)
    # the region stores go to OMERO through the spool (never waited for), verdicts attached
    report.run_info["omero"] = queue_for_omero(
        report.stores,
        run_id,
        "em-qc",
        {"flow": "em-qc", "prefect_flow_run_id": str(flow_run.id), "folder": str(params.folder)},
        {k: levels[k] for k in ("images", "ok", "warn", "fail")},
    )
    return report
