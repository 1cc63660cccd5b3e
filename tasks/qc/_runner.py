"""QC of a live stream of images: source -> analyzer (metrics on workers) -> neighbours ->
verdict -> callbacks, each image once.

One call runs one acquisition's QC (inside one Prefect task: never a task per image):

    report = run_qc(source, analyzer, judge, on_anomaly=alert)

The source is any frame source of the closed-loop core (a watched folder, an edge stream, a
journal replay); the analyzer is ``tasks.live.Analyzer`` over ``QCWorkers`` (Ray, Dask or
threads), with the metric code as its local fallback. Images are judged strictly in the order
they came. ``on_verdict(verdict)`` sees every verdict (revisions of provisional ones
included); ``on_anomaly(verdict)`` fires once per image that reaches the config's alert
level. A source with a ledger (``WatchedFolderSource``) gets each image's verdict as its
``done`` record, and on a restart the judge's baseline is rebuilt from those records, so the
images after a restart are judged as if there had been none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.live import Analyzer, FrameSource, LiveFrame

from ._metrics import ImageMetrics
from ._pairs import TilePlacement, TileRegistry
from ._verdict import QCJudge, Verdict

__all__ = ["QCReport", "run_qc"]

log = logging.getLogger(__name__)

_END = object()
VerdictCallback = Callable[[Verdict], None]
TileCallback = Callable[[LiveFrame, ImageMetrics, Verdict], None]


@dataclass
class QCReport:
    """What happened: final verdicts by image, latencies (file/frame ready -> first verdict),
    anomaly callbacks fired, and the metrics of every image (for plots)."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    anomalies_fired: int = 0
    callback_errors: list[str] = field(default_factory=list)
    metrics: list[tuple[int, str, dict[str, float]]] = field(default_factory=list)
    thumbnails: dict[str, np.ndarray] = field(default_factory=dict)
    analysed_where: dict[str, int] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)  # filled by whoever writes them
    store_errors: list[str] = field(default_factory=list)
    run_info: dict[str, Any] = field(default_factory=dict)  # e.g. the Prefect flow run id
    wall_s: float = 0.0

    def latency_summary(self) -> dict[str, float | None]:
        if not self.latency_ms:
            return {"p50": None, "p99": None, "max": None}
        arr = np.asarray(self.latency_ms)
        return {
            "p50": round(float(np.percentile(arr, 50)), 2),
            "p99": round(float(np.percentile(arr, 99)), 2),
            "max": round(float(arr.max()), 2),
        }

    def levels(self) -> dict[str, int]:
        out = {"ok": 0, "warn": 0, "fail": 0}
        for v in self.verdicts.values():
            out[v.level] += 1
        return out


def run_qc(
    source: FrameSource,
    analyzer: Analyzer,
    judge: QCJudge,
    *,
    on_verdict: VerdictCallback | None = None,
    on_anomaly: VerdictCallback | None = None,
    on_tile: TileCallback | None = None,
    keep_thumbnails: int = 2000,
) -> QCReport:
    """QC every image ``source`` yields until it ends (or ``source.stop()``)."""
    from skimage import registration  # noqa: F401  (imported now, not on the first tile: ~1 s)

    report = QCReport()
    started = time.perf_counter()
    registry = TileRegistry()
    alert = judge.config.alert_level
    _restore(source, judge)
    frames: queue.Queue[Any] = queue.Queue()
    reader = threading.Thread(target=_read, args=(source, frames), name="qc-source", daemon=True)
    reader.start()
    pending: deque[Any] = deque()
    ended = False

    def fire(callback: VerdictCallback | None, verdict: Verdict) -> None:
        if callback is None:
            return
        try:
            callback(verdict)
        except Exception as exc:  # a broken alert must not stop QC; it is reported
            report.callback_errors.append(f"{verdict.image}: {type(exc).__name__}: {exc}")
            log.exception("QC callback failed for %s", verdict.image)

    def record(verdict: Verdict) -> None:
        before = report.verdicts.get(verdict.image)
        report.verdicts[verdict.image] = verdict
        fire(on_verdict, verdict)
        if verdict.at_least(alert) and not (before and before.at_least(alert)):
            report.anomalies_fired += 1
            fire(on_anomaly, verdict)

    try:
        while True:
            if pending and (frames.empty() or analyzer.ready(pending[0])):
                analysis = analyzer.wait(pending.popleft())
                frame = analysis.frame
                metrics: ImageMetrics = analysis.result
                report.analysed_where[analysis.where] = (
                    report.analysed_where.get(analysis.where, 0) + 1
                )
                image = frame.header.tag or f"frame-{frame.index:06d}"
                values = dict(metrics.values)
                event = frame.header.event
                placement = TilePlacement(
                    frame.header.stage.x if event.get("stage_known", True) else None,
                    frame.header.stage.y if event.get("stage_known", True) else None,
                    frame.header.pixel_size_um if event.get("pixel_size_known", True) else None,
                )
                values.update(registry.add(image, metrics, placement).values)
                verdicts = judge.judge(
                    image,
                    frame.index,
                    values,
                    error=metrics.error,
                    t_ready_ns=frame.header.t_ready_ns,
                )
                first = verdicts[0]
                report.latency_ms.append((first.t_verdict_ns - frame.header.t_ready_ns) / 1e6)
                report.metrics.append((frame.index, image, values))
                if metrics.thumbnail is not None and len(report.thumbnails) < keep_thumbnails:
                    report.thumbnails[image] = metrics.thumbnail  # a later revision may fail it
                for verdict in verdicts:
                    record(verdict)
                if on_tile is not None:
                    on_tile(frame, metrics, first)
                done = getattr(source, "done", None)
                if callable(done):
                    done(frame, {"verdict": first.model_dump(mode="json"), "values": values})
                continue
            if ended and not pending:
                for verdict in judge.finish():  # a short run: learn from what came
                    record(verdict)
                break
            try:
                item = frames.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _END:
                ended = True
            elif isinstance(item, BaseException):
                raise item
            elif isinstance(item, LiveFrame):
                pending.append(analyzer.submit(item))
    finally:
        source.stop()
        report.wall_s = time.perf_counter() - started
    return report


def _restore(source: FrameSource, judge: QCJudge) -> None:
    """A restarted watched folder: feed the judge the values of the images already done."""
    ledger = getattr(source, "ledger", None)
    if ledger is None:
        return
    done = sorted((e for e in ledger.entries.values() if e.done), key=lambda e: e.index)
    for entry in done:
        result = entry.result or {}
        values = result.get("values")
        verdict = result.get("verdict") or {}
        if values is None:
            continue
        judge.judge(entry.key, entry.index, values, error=verdict.get("error"))


def _read(source: FrameSource, out: queue.Queue[Any]) -> None:
    try:
        for frame in source.frames():
            out.put(frame)
    except BaseException as exc:
        out.put(exc)
    finally:
        out.put(_END)
