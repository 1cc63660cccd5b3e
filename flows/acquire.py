"""Acquire: run a user's useq-schema MDASequence through an edge agent into OME-Zarr images with
the sequence's own axes.

Phases are Prefect tasks: ``prepare-acquisition`` reads the sequence strictly (malformed YAML
or unknown fields are refused with the fix), shortens it for a rehearsal (``fast``) and checks
every event against the edge's safety envelope before anything moves; ``acquire`` sends the
events as one command (its id made of the run id, so a retry or a re-run never acquires twice)
and writes each frame, read back from the edge's journal as it is appended, into its field's
OME-Zarr image (t, c, z, y, x as the sequence uses them), with a progress artifact and progress
lines. Optional analysis hooks run the registry's model on Ray/Dask workers through the
closed-loop core (``tasks.live``: source -> analyzer -> a measuring policy); no Prefect task per
frame. Then ``check-field`` per field of view (its state in the UI says whether every planned
plane came) and ``summarise-acquisition`` (the round trip: the events the edge ran against the
sequence's, index for index).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import useq
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from scopeflow import CommandDone, ConfigurationError, EdgeRejected
from tasks.decisions import SequenceMeasurePolicy
from tasks.hardware import EdgeClient
from tasks.live import (
    analyzer_for,
    command_id,
    local_model_choice,
    run_edge_phase,
)

from ._acquire_hooks import SelectedFrames, position_frame_selector
from ._acquire_params import AcquireParams, AnalysisHook
from ._acquire_plan import (
    FieldPlan,
    check_envelope,
    envelope_refusal,
    image_events,
    load_sequence,
    normalised_event,
    plan_fields,
    shorten_sequence,
)
from ._acquire_store import FieldStores, FrameRecord, follow_journal, follow_stream
from ._acquisition_report import reports_acquisition
from ._artifacts import publish_summary
from ._live_analysis import open_backend
from ._microscope_run import microscope_run
from ._run_id import default_run_id

__all__ = ["AcquisitionOutcome", "PreparedAcquisition", "acquire", "planned_events"]

PHASE = "acquire"
_PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class PreparedAcquisition:
    """What ``prepare-acquisition`` found: the plan's size and where the run's frames start."""

    first_frame: int
    events: int
    images: int
    fields: tuple[FieldPlan, ...]
    journal: str


@dataclass(frozen=True)
class AcquisitionOutcome:
    """What the ``acquire`` phase leaves for the next ones (paths and numbers)."""

    run_dir: Path
    command_id: str
    done: dict[str, Any]
    frames_stored: int
    per_field: dict[str, int]
    stores: dict[str, str]
    round_trip: dict[str, Any]
    flushes: int
    source: str
    analysis: dict[str, Any] | None
    wall_s: float


def planned_events(params: AcquireParams) -> tuple[useq.MDASequence, list[useq.MDAEvent]]:
    """The sequence as it will run (shortened under ``fast``) and its events, without the
    parent sequence each carries (the edge gets the events themselves)."""
    sequence = load_sequence(params.sequence)
    if params.fast:
        sequence = shorten_sequence(sequence, params.fast_exposure_ms)
    events = [e.model_copy(update={"sequence": None}) for e in sequence]
    if not events:
        raise ConfigurationError(
            f"{params.sequence} plans no events; give it channels, positions or a time plan"
        )
    return sequence, events


@task(name="prepare-acquisition", cache_policy=NO_CACHE)
def prepare_acquisition(params: AcquireParams) -> PreparedAcquisition:
    """Read and check the sequence against the edge's envelope; nothing moves here."""
    _, events = planned_events(params)
    fields = plan_fields(_timed_events(params, events))
    if params.analysis is not None:
        params.analysis.compute_profile()  # an unknown profile fails here, before anything runs
    with params.connect() as edge:
        info = edge.info()
        state = edge.state()
        check_envelope(events, info["envelope"], state.model_dump(mode="json"))
    images = sum(f.images for f in fields.values())
    get_run_logger().info(
        "sequence %s: %d events, %d images in %d fields of view %s",
        params.sequence, len(events), images, len(fields),
        ", ".join(f"{f.name} {f.sizes}" for f in fields.values()),
    )  # fmt: skip
    return PreparedAcquisition(
        first_frame=state.frames_journaled,
        events=len(events),
        images=images,
        fields=tuple(fields.values()),
        journal=str(info.get("journal", "")),
    )


def _timed_events(params: AcquireParams, events: list[useq.MDAEvent]) -> list[useq.MDAEvent]:
    """The events with the times the user planned (a rehearsal keeps the planned time axis in
    the stores' metadata, not its own zero waits)."""
    if not params.fast:
        return events
    return list(load_sequence(params.sequence))


@task(name="acquire", cache_policy=NO_CACHE)
def acquire_sequence(
    params: AcquireParams, prepared: PreparedAcquisition, run_id: str, run_dir: Path
) -> AcquisitionOutcome:
    """Send the sequence, store every frame at its place as it is journaled, analyse on the
    workers when asked; progress as an artifact and log lines."""
    started = time.perf_counter()
    log = get_run_logger()
    _, events = planned_events(params)
    plans = {f.key: f for f in prepared.fields}
    cid = command_id(run_id, PHASE, "sequence")
    expected = [normalised_event(e) for e in image_events(events)]
    images_dir = run_dir / "images"
    if images_dir.exists():  # a re-run under the same run id: rebuilt from the journal
        log.info("re-run of %s: rewriting %s from the edge's journal", run_id, images_dir)
        shutil.rmtree(images_dir)
    stores = FieldStores(
        images_dir,
        plans,
        expected,
        compression=params.compression,
        flush_every_s=params.flush_every_s,
        attributes={"run_id": run_id, "command_id": cid, "sequence": str(params.sequence)},
    )
    progress = _Progress(log, prepared.images)
    stores.on_flush = progress.update
    journal = Path(prepared.journal)
    local = params.frames_from != "stream" and (journal / "journal.json").is_file()
    if params.frames_from == "journal" and not local:
        raise ConfigurationError(
            f"frames_from 'journal' but the edge's journal {journal} is not on this host; use "
            "frames_from 'stream' (or 'auto') when the flow runs away from the edge"
        )
    writer = _StoreWriter(params, stores, cid, journal if local else None)
    analysis = None
    with params.connect() as edge:
        if params.analysis is None:
            ack = _submit(edge, events, cid, params)
            start = ack.stream_from if ack.stream_from is not None else prepared.first_frame
            writer.start(start)
            writer.wait(progress)
        else:
            writer.start(prepared.first_frame)
            try:
                analysis = _analyse(params.analysis, edge, events, plans, params, run_id, run_dir,
                                    prepared.first_frame)  # fmt: skip
            except BaseException:
                writer.stop()
                raise
            writer.wait(progress)
    stores.close()
    progress.update(stores, final=True)
    done = writer.done
    assert done is not None
    (run_dir / "fields.json").write_text(
        json.dumps(
            {plans[k].name: frames for k, frames in stores.edge_frames.items()},
            separators=(",", ":"),
        )
    )
    rt = stores.round_trip
    return AcquisitionOutcome(
        run_dir=run_dir,
        command_id=cid,
        done=done.model_dump(mode="json"),
        frames_stored=stores.frames,
        per_field={plans[k].name: n for k, n in stores.per_field.items()},
        stores={plans[k].name: str(w.path) for k, w in stores.writers.items()},
        round_trip={
            "events_planned": len(events),
            "events_run": done.events - done.failed - done.dropped,
            "images_planned": len(expected),
            "frames_checked": rt.checked,
            "mismatches": rt.mismatches,
            "first_mismatches": rt.first_mismatches,
            "exact": rt.mismatches == 0
            and rt.checked == len(expected)
            and done.events == len(events)
            and done.failed == 0
            and done.dropped == 0,
        },
        flushes=stores.flushes,
        source="journal" if local else "stream",
        analysis=analysis,
        wall_s=round(time.perf_counter() - started, 2),
    )


def _submit(edge: EdgeClient, events: list[useq.MDAEvent], cid: str, params: AcquireParams) -> Any:
    try:
        return edge.submit_events(events, command_id=cid, on_error=params.on_error)
    except EdgeRejected as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        if detail.get("error") == "envelope_violation":
            raise envelope_refusal(
                events, str(detail.get("message")), detail.get("limit"), detail.get("value")
            ) from exc
        raise


class _StoreWriter:
    """A thread following the run's journaled frames into the field stores."""

    def __init__(
        self, params: AcquireParams, stores: FieldStores, cid: str, journal: Path | None
    ) -> None:
        self._params = params
        self._stores = stores
        self._cid = cid
        self._journal = journal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done: CommandDone | None = None
        self.error: BaseException | None = None

    def start(self, first: int) -> None:
        # the thread runs in this task's context: its progress updates reach this run's API
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run, first), name="acquire-stores", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wait(self, progress: _Progress) -> None:
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
        if self.error is not None:
            raise self.error
        if self.done is None:
            raise ConfigurationError("the acquisition was stopped before its frames were stored")

    def _run(self, first: int) -> None:
        try:
            with self._params.connect() as edge:
                for item in self._frames(edge, first):
                    if isinstance(item, FrameRecord):
                        self._stores.add(item)
                    else:
                        self.done = item
        except BaseException as exc:  # handed to the task's thread, which raises it
            self.error = exc

    def _frames(self, edge: EdgeClient, first: int) -> Any:
        if self._journal is None:
            return follow_stream(
                edge, start=first, command_id=self._cid, transport=self._params.transport
            )

        def done() -> CommandDone | None:
            with contextlib.suppress(EdgeRejected):
                return edge.command_status(self._cid).done
            return None

        return follow_journal(
            self._journal, start=first, command_id=self._cid, done=done, stop=self._stop
        )


class _Progress:
    """Progress lines in the log (and the CLI) and a Prefect progress artifact."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[Any], planned: int) -> None:
        self._log = log
        self._planned = max(planned, 1)
        self._started = time.monotonic()
        self._last = 0.0
        self._artifact = create_progress_artifact(
            0.0, key="acquire-progress", description="Frames stored of the sequence's images"
        )

    def update(self, stores: FieldStores, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        pct = 100.0 * stores.frames / self._planned
        rate = stores.frames / max(now - self._started, 1e-9)
        fields = ", ".join(
            f"{stores.plans[k].name} {n}/{stores.plans[k].images}"
            for k, n in sorted(stores.per_field.items())
        )
        self._log.info(
            "acquire: %d/%d frames stored (%.1f %%), %.0f frames/s; %s",
            stores.frames, self._planned, pct, rate, fields,
        )  # fmt: skip
        with contextlib.suppress(Exception):  # the UI's progress must never stop the run
            update_progress_artifact(self._artifact, min(pct, 100.0))


def _analyse(
    hook: AnalysisHook,
    edge: EdgeClient,
    events: list[useq.MDAEvent],
    plans: dict[tuple[int, int], FieldPlan],
    params: AcquireParams,
    run_id: str,
    run_dir: Path,
    first_frame: int,
) -> dict[str, Any]:
    """The sequence sent through the closed loop: frames -> workers -> measurements."""
    backend = open_backend(hook)
    with contextlib.ExitStack() as stack:
        engine = "local"
        if backend is not None:
            stack.enter_context(backend)
            engine = str(backend.info()["kind"])
        local, options = local_model_choice(
            hook.model, hook.model_options, hook.fallback_model, remote=backend is not None
        )
        analyzer = analyzer_for(
            backend, deadline_ms=hook.deadline_ms, local_model=local, local_options=options
        )
        wanted = position_frame_selector(plans, hook.channel) if hook.scope == "position" else None
        report = run_edge_phase(
            edge,
            analyzer,
            SequenceMeasurePolicy(events),
            run_id=run_id,
            phase=PHASE,
            decisions_path=run_dir / "decisions.jsonl",
            first_frame=first_frame,
            transport=params.transport,
            select=lambda source: SelectedFrames(source, wanted),
        )
    if report.refused:
        raise ConfigurationError(
            f"the edge refused the sequence, nothing was acquired: {report.refused[0].refused}"
        )
    state = report.state
    return {
        "model": hook.model,
        "scope": hook.scope,
        "engine": engine,
        "frames_analysed": sum(state.frames.values()),
        "objects_per_field": dict(state.objects),
        "frames_per_field": dict(state.frames),
        "loop": report.summary(),
    }


@task(name="check-field", cache_policy=NO_CACHE, task_run_name="check-field-{name}")
def check_field(name: str, outcome: AcquisitionOutcome, planned: int) -> dict[str, Any]:
    """One field of view: its store opens with its axes, and every planned plane came."""
    from tasks.storage import open_image

    stored = outcome.per_field.get(name, 0)
    path = outcome.stores.get(name)
    if path is None:
        raise ConfigurationError(f"field {name}: no frame came, so no image was written")
    image = open_image(Path(path))
    row = {
        "field": name,
        "axes": "".join(a["name"] for a in image.axes),
        "shape": "x".join(str(s) for s in image.shape),
        "frames": stored,
        "planned": planned,
        "pixel_size_um": image.pixel_size_um,
        "store": path,
    }
    if stored != planned:
        raise ConfigurationError(
            f"field {name}: {stored} of {planned} planned planes were stored (failed or dropped "
            f"events, see the edge's notices); the store at {path} holds what came"
        )
    return row


@task(name="summarise-acquisition", cache_policy=NO_CACHE)
def summarise_acquisition(
    params: AcquireParams,
    prepared: PreparedAcquisition,
    outcome: AcquisitionOutcome,
    rows: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """The fields table, the round trip and the summary as artifacts."""
    rt = outcome.round_trip
    summary = {
        "run_dir": str(outcome.run_dir),
        "sequence": str(params.sequence),
        "fast": params.fast,
        "events": prepared.events,
        "images_planned": prepared.images,
        "frames_stored": outcome.frames_stored,
        "fields": len(prepared.fields),
        "outcome": outcome.done.get("outcome"),
        "round_trip_exact": rt["exact"],
        "round_trip": {k: v for k, v in rt.items() if k != "first_mismatches"},
        "frames_from": outcome.source,
        "stores": outcome.stores,
        "flushes": outcome.flushes,
        "acquire_s": outcome.wall_s,
        "frames_per_s": round(outcome.frames_stored / outcome.wall_s, 1) if outcome.wall_s else 0,
        "analysis": outcome.analysis and {k: v for k, v in outcome.analysis.items() if k != "loop"},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    create_table_artifact(rows, key="acquire-fields", description="One image per field of view")
    publish_summary(
        "Acquisition",
        summary,
        key="acquire-summary",
        description="Acquisition summary and round trip",
        leave_out=("stores", "round_trip", "analysis"),
    )
    if not rt["exact"]:
        raise ConfigurationError(
            f"the edge's run does not match the sequence: {json.dumps(rt)[:2000]}; the stores "
            f"under {outcome.run_dir} hold what came"
        )
    return summary


@flow(name="acquire", log_prints=True)
@reports_acquisition("acquire", stores=lambda summary: sorted(summary["stores"].values()))
def acquire(params: AcquireParams) -> dict[str, Any]:
    """Prepare (read, check) -> acquire (frames into their fields' images) -> check each field
    -> summarise (the round trip)."""
    started = time.perf_counter()
    with microscope_run(params, params.run_id or default_run_id("acquire")) as run:
        run_dir = run.run_dir
        prepared = prepare_acquisition(params)
        outcome = acquire_sequence(params, prepared, run.run_id, run_dir)
    checks = [check_field(f.name, outcome, f.images, return_state=True) for f in prepared.fields]
    rows = [state.result() for state in checks if state.is_completed()]
    summary = summarise_acquisition(params, prepared, outcome, rows, started)
    failed = [state for state in checks if not state.is_completed()]
    if failed:
        raise ConfigurationError(
            f"{len(failed)} of {len(checks)} fields are incomplete (first: "
            f"{failed[0].message}); the summary and stores under {run_dir} hold what came"
        )
    return summary
