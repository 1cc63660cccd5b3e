"""The edge agent: drives the microscope from an event queue, journals, then announces frames.

Threads:
- acquisition: pymmcore-plus `MDARunner` fed by an endless iterator over the event queue, so
  events can be appended while a run is going on;
- journal: writes each frame to the OME-Zarr journal, then publishes it to the `FrameHub`.
Direct commands run on the caller's thread under the hardware lock the engine also holds.

Every submitted command is followed to its end: a failed event (the engine's `DeviceFault`,
after the retries of its `ErrorPolicy`) becomes an `EventFailed` notice, an ``abort`` drops the
command's queued events, and when all its events have run, failed or been dropped a
`CommandDone` notice follows. Notices go through the journal thread's queue, so they take their
place among the frames in the order things happened; they are kept (in
``notices.jsonl`` next to the journal, the recent ones in memory too) for consumers that resume.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import useq
from pymmcore_plus import CMMCorePlus

from scopeflow import (
    DEFAULT_ERROR_POLICY,
    CommandAck,
    CommandDone,
    CommandRequest,
    CommandStatus,
    DoseAccount,
    EdgeServerSettings,
    EdgeState,
    EnvelopeViolation,
    ErrorPolicy,
    EventFailed,
    Frame,
    FrameHeader,
    HardwareError,
    MoveStage,
    Pause,
    PumpRun,
    Resume,
    SetChannel,
    SetExposure,
    SetIllumination,
    SetObjective,
    ShmRing,
    ShmRingUnavailable,
    StagePosition,
    Stop,
    SubmitEvents,
    SubmitSequence,
    checksum,
)
from tasks.storage import FrameJournal

from ._command_log import CommandLog
from ._command_scope import command_scope
from ._device_runner import DeviceActionRunner, field_of_view_um
from ._dose import DoseLedger
from ._engine import DeviceFault, LockedMDAEngine
from ._envelope import HardwareContext, SafetyEnvelope
from ._event_queue import QueueLog, repeat_ack
from ._guard import EnvelopeGuard
from ._hub import FrameHub
from ._limits import (
    check_event_count,
    check_queue_room,
    check_truth_region,
    check_truth_time,
    expand_events,
)
from ._pump_ledger import PumpLedger
from ._pump_timing import check_pump_timing, pump_run_of

__all__ = ["EdgeAgent", "SampleTruth", "TruthProvider"]

log = logging.getLogger(__name__)

TruthProvider = Callable[[tuple[float, float, float, float] | None, float | None], dict[str, Any]]


FaultInjector = Callable[[int, int, bool, int], dict[str, int]]


@dataclass(frozen=True)
class SampleTruth:
    """A simulated sample's ground truth: cells in a region at a time, and the sample's clock
    (stamped on every frame, so a consumer can ask for the truth of the instant it saw);
    ``faults(snap, stage, clear, hang)`` makes the simulated camera or stage fail (tests)."""

    cells: TruthProvider
    clock: Callable[[], float]
    faults: FaultInjector | None = None
    time_scale: float = 1.0  # simulated seconds per second (how fast a simulated pump pumps)


_SHUTDOWN = object()
_JOURNAL_QUEUE_FRAMES = 32


@dataclass(slots=True)
class _CommandRun:
    """A submitted command on its way through the queue (mutated under ``_runs_lock``)."""

    command_id: str
    tag: str | None
    events: int
    stream_from: int
    frames: int = 0
    finished: int = 0  # events that ran, failed or were dropped
    failed: int = 0
    dropped: int = 0
    aborted: bool = False
    stopped: bool = False
    failures: list[EventFailed] = field(default_factory=list)
    done: CommandDone | None = None

    def outcome(self) -> str:
        if self.stopped:
            return "stopped"
        if self.aborted:
            return "aborted"
        return "partial" if self.failed else "completed"


@dataclass(frozen=True, slots=True)
class _Queued:
    event: useq.MDAEvent
    dose_nj: int  # integer nanojoules: sums and differences stay exact
    run: _CommandRun
    number: int  # the event's place in its command
    policy: ErrorPolicy
    pump_run: PumpRun | None = None  # its volume is reserved while it is queued

    @property
    def command_id(self) -> str:
        return self.run.command_id

    @property
    def tag(self) -> str | None:
        return self.run.tag


@dataclass(frozen=True, slots=True)
class _NoticeDraft:
    """A notice without its stream position, which the journal thread gives it."""

    kind: type[EventFailed] | type[CommandDone]
    fields: dict[str, Any]
    run: _CommandRun


def _nj(mj: float) -> int:
    return round(mj * 1e6)


class EdgeAgent:
    """Owns the microscope core, the event queue, the journal and the frame hub."""

    def __init__(
        self,
        core: CMMCorePlus,
        settings: EdgeServerSettings,
        envelope: SafetyEnvelope,
        *,
        simulated: bool,
        truth: SampleTruth | None = None,
    ) -> None:
        self.core = core
        self.settings = settings
        self.envelope = envelope
        self.simulated = simulated
        self._truth = truth
        self.session_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        self.session_dir = settings.data_dir / "sessions" / self.session_id
        self.journal = FrameJournal.create(
            self.session_dir / "journal",
            compression=settings.journal_compression,
            prewrite=settings.journal_prewrite,
            index_window=settings.journal_index_window,
        )
        self.commands = CommandLog(settings.data_dir / "commands.jsonl")
        self.queue_log = QueueLog(settings.data_dir, self.session_id)  # settles a crash's work
        self.hub = FrameHub(
            self._read_back,
            settings.ring_mib * 1024 * 1024,
            notices_path=self.session_dir / "notices.jsonl",
            notice_window=settings.notice_window,
        )
        self.ring = _shm_ring(settings.shm_slots, _frame_bytes(core))

        self._hw_lock = threading.RLock()
        self._command_lock = threading.Lock()
        self._queue_lock = threading.Lock()  # a leaf lock: taking events out of the queue
        self._runs_lock = threading.Lock()
        self._runs: dict[str, _CommandRun] = {}
        self._current_failed = False
        self._events: queue.Queue[_Queued | object] = queue.Queue()
        self._journal_q: queue.Queue[tuple[np.ndarray, dict[str, Any]] | object] = queue.Queue(
            _JOURNAL_QUEUE_FRAMES
        )
        self._dose_lock = threading.Lock()
        self._dose_reserved_nj = 0  # estimates of queued events; charged when taken (guard)
        self.guard = EnvelopeGuard(
            core,
            envelope,
            DoseLedger(settings.data_dir),
            channel_group=settings.channel_group,
            intensity_property=settings.intensity_property,
        )
        self._frames_acquired = 0
        self._current: useq.MDAEvent | None = None
        self._current_item: _Queued | None = None
        self._current_frames_from = 0
        self._stop_run = threading.Event()
        self._shutdown = threading.Event()
        self.last_error: str | None = None

        self.pumps = PumpLedger(settings.data_dir)
        self._time_scale = truth.time_scale if truth is not None else 1.0
        devices = DeviceActionRunner(core, self.guard, self.pumps, self._time_scale)
        core.mda.set_engine(LockedMDAEngine(core, self._hw_lock, self, self.guard, devices))
        core.mda.events.frameReady.connect(self._on_frame)
        self._acq_thread = threading.Thread(target=self._acquire_loop, name="acquire", daemon=True)
        self._journal_thread = threading.Thread(
            target=self._journal_loop, name="journal", daemon=True
        )

    # lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._journal_thread.start()
        self._acq_thread.start()

    def shutdown(self) -> None:
        """Stop acquiring, write out every frame already taken, close the journal."""
        if self._shutdown.is_set():
            return
        self._shutdown.set()
        self._drop_queued()
        self._events.put(_SHUTDOWN)
        self.core.mda.cancel()
        self._acq_thread.join(timeout=30)
        self._journal_q.put(_SHUTDOWN)
        self._journal_thread.join(timeout=60)
        self.hub.close()
        self.journal.close()
        self.commands.close()
        self.queue_log.close()
        if self.ring is not None:
            self.ring.close()
        self.core.mda.events.frameReady.disconnect(self._on_frame)

    # commands -------------------------------------------------------------------------------

    def submit_events(self, request: SubmitEvents) -> CommandAck:
        check_event_count(request.events, self.settings.limits.max_events_per_request)
        return self._run_command(request, request.events)

    def submit_sequence(self, request: SubmitSequence) -> CommandAck:
        limits = self.settings.limits
        events = expand_events(
            request.sequence, limits.max_events_per_request, limits.max_layout_steps
        )
        if events:
            events[0] = events[0].model_copy(update={"reset_event_timer": True})
        return self._run_command(request, events)

    def _run_command(
        self, request: SubmitEvents | SubmitSequence, events: list[useq.MDAEvent]
    ) -> CommandAck:
        command_id = request.command_id

        def enqueue() -> CommandAck:
            policies = [ErrorPolicy.for_event(e, request.on_error) for e in events]
            context = self._hardware_context()
            doses = self.envelope.check_events(events, context)
            limits = self.settings.limits
            check_queue_room(self._events.qsize(), len(events), limits.max_queued_events)
            runs = [pump_run_of(e) for e in events]
            idle = self._events.qsize() == 0 and self._current is None
            check_pump_timing(events, self.pumps, time_scale=self._time_scale, idle=idle)
            queued_runs = [r for r in runs if r is not None]
            self.pumps.reserve(queued_runs, self.envelope.devices.pumps)
            try:
                with self._dose_lock:
                    self.envelope.check_budget(
                        self.guard.ledger.used_mj, self._dose_reserved_nj / 1e6, sum(doses)
                    )
                    self._dose_reserved_nj += sum(_nj(d) for d in doses)
            except BaseException:
                for pump_run in queued_runs:
                    self.pumps.release(pump_run)
                raise
            # nothing of this command can come before what is published now
            run = _CommandRun(command_id, request.tag, len(events), self.hub.count)
            self.queue_log.accepted(command_id, request.tag, len(events), run.stream_from)
            with self._runs_lock:
                self._runs[command_id] = run
            with self._queue_lock:
                for number, (event, dose, policy, pump_run) in enumerate(
                    zip(events, doses, policies, runs, strict=True)
                ):
                    self._events.put(_Queued(event, _nj(dose), run, number, policy, pump_run))
            return CommandAck(
                command_id=command_id,
                repeat=False,
                queued_events=len(events),
                queue_depth=self._events.qsize(),
                stream_from=run.stream_from,
            )

        with self._command_lock:
            ack = self.commands.run_once(command_id, request.model_dump_json(), enqueue)
        return repeat_ack(ack, self.command_status(command_id))

    def command(self, request: CommandRequest) -> CommandAck:
        def execute() -> CommandAck:
            with command_scope(request.command_id):  # drivers name the command in their I/O
                detail = self._execute(request.command)
            return CommandAck(
                command_id=request.command_id,
                repeat=False,
                queue_depth=self._events.qsize(),
                detail=detail,
            )

        with self._command_lock:
            return self.commands.run_once(request.command_id, request.model_dump_json(), execute)

    def _execute(self, command: object) -> str:
        core, env = self.core, self.envelope
        match command:
            case MoveStage(x=x, y=y, z=z):
                env.check_position(x, y, z, "move_stage")
                with self._hw_lock, _hardware("move the stage"):
                    env.check_move(self.guard.stage(), x, y, z, "move_stage")
                    # wait for the moved devices only: waitForSystem polls every device
                    if x is not None or y is not None:
                        cx, cy = core.getXYPosition()
                        core.setXYPosition(cx if x is None else x, cy if y is None else y)
                    if z is not None:
                        core.setPosition(z)
                    if x is not None or y is not None:
                        core.waitForDevice(core.getXYStageDevice())
                    if z is not None:
                        core.waitForDevice(core.getFocusDevice())
                return "stage moved"
            case SetChannel(channel=channel):
                env.check_channel(channel, "set_channel")
                with self._hw_lock, _hardware("set the channel"):
                    core.setConfig(self.settings.channel_group, channel)
                return f"channel {channel}"
            case SetExposure(exposure_ms=exposure):
                env.check_exposure(exposure, "set_exposure")
                with self._hw_lock, _hardware("set the exposure"):
                    core.setExposure(exposure)
                return f"exposure {exposure:g} ms"
            case SetIllumination(intensity=intensity):
                env.check_intensity(intensity, "set_illumination")
                device, prop = self.settings.intensity_property
                with self._hw_lock, _hardware("set the illumination"):
                    core.setProperty(device, prop, intensity)
                return f"intensity {intensity:g} %"
            case SetObjective(objective=objective):
                env.check_objective(objective, "set_objective")
                with self._hw_lock, _hardware("switch the objective"):
                    core.setConfig(self.settings.objective_group, objective)
                    core.waitForSystem()
                return f"objective {objective}"
            case Pause():
                self.core.mda.set_paused(True)
                return "paused"
            case Resume():
                self.core.mda.set_paused(False)
                return "resumed"
            case Stop():
                dropped = self._stop()
                return f"stopped; {dropped} queued events dropped"
        raise TypeError(f"unknown command {command!r}")  # pragma: no cover - the union is closed

    def _stop(self) -> int:
        dropped = self._drop_queued()
        self._stop_run.set()
        self.core.mda.set_paused(False)
        self.core.mda.cancel()
        return dropped

    def _drop_queued(self) -> int:
        """Drop every queued event (a stop, a shutdown, a failed run); returns how many."""
        with self._queue_lock:
            items = _drain(self._events)
        dropped = [item for item in items if isinstance(item, _Queued)]
        for item in dropped:
            item.run.stopped = True
            self._drop(item)
        return len(dropped)

    def _abort(self, run: _CommandRun) -> int:
        """Drop the queued events of ``run`` only; the rest of the queue keeps its order."""
        with self._queue_lock:
            items = _drain(self._events)
            for item in items:
                if not (isinstance(item, _Queued) and item.run is run):
                    self._events.put(item)
        dropped = [item for item in items if isinstance(item, _Queued) and item.run is run]
        run.aborted = True
        for item in dropped:
            self._drop(item)
        return len(dropped)

    def _drop(self, item: _Queued) -> None:
        with self._dose_lock:
            self._dose_reserved_nj -= item.dose_nj
        if item.pump_run is not None:
            self.pumps.release(item.pump_run)
        self._event_finished(item.run, "dropped")

    # outcomes -------------------------------------------------------------------------------

    def retries_for(self, event: useq.MDAEvent) -> int:
        """`FailureHandler`: the retries of the running event's policy."""
        item = self._current_item
        return (item.policy if item is not None else DEFAULT_ERROR_POLICY).retries

    def event_failed(self, event: useq.MDAEvent, fault: DeviceFault, attempts: int) -> None:
        """`FailureHandler`: announce the failure, then skip the event or abort its command."""
        item = self._current_item
        if item is None:  # pragma: no cover - the engine runs only events from the queue
            log.error("event %r failed outside a command: %s", event, fault.error)
            return
        self._current_failed = True
        abort = item.policy.then == "abort"
        log.warning(
            "command %s event %d failed after %d attempt(s), %s: %s",
            item.command_id, item.number, attempts, "aborting" if abort else "skipping",
            fault.error,
        )  # fmt: skip
        self._notify(
            EventFailed,
            item.run,
            event_number=item.number,
            event=event.model_dump(mode="json", exclude_unset=True, exclude={"metadata"}),
            step=fault.step,
            device=fault.device,
            error=fault.error,
            fix=fault.fix,
            attempts=attempts,
            policy=item.policy.text(),
            action="aborted" if abort else "skipped",
        )
        if abort:
            self._abort(item.run)

    def _finish_current(self) -> None:
        """The running event is over (its frames are queued for the journal already)."""
        item = self._current_item
        self._current = self._current_item = None
        failed, self._current_failed = self._current_failed, False
        if item is not None:
            cancelled = self._stop_run.is_set() or self._shutdown.is_set()
            if not failed and cancelled and item.run.frames == self._current_frames_from:
                item.run.stopped = True  # a stop cancelled it before its snap: it did not run
                self._event_finished(item.run, "dropped")
                return
            self._event_finished(item.run, "failed" if failed else "ran")

    def _event_finished(self, run: _CommandRun, how: str) -> None:
        if how != "dropped":  # a dropped event is not run: the queue log needs no line for it
            self._after_journal(lambda: self.queue_log.finished(run.command_id, how))
        with self._runs_lock:
            run.finished += 1
            run.failed += how == "failed"
            run.dropped += how == "dropped"
            if run.finished < run.events:
                return
            counts = {"frames": run.frames, "failed": run.failed, "dropped": run.dropped}
        self._notify(CommandDone, run, outcome=run.outcome(), events=run.events, **counts)

    def _after_journal(self, step: Callable[[], None]) -> None:
        """Run ``step`` on the journal thread once the frames queued before it are journaled."""
        if threading.current_thread() is self._journal_thread:
            step()
        else:
            self._journal_q.put(step)

    def _notify(
        self, kind: type[EventFailed] | type[CommandDone], run: _CommandRun, **fields: Any
    ) -> None:
        fields |= {"command_id": run.command_id, "tag": run.tag, "t_ns": time.time_ns()}
        draft = _NoticeDraft(kind, fields, run)
        if threading.current_thread() is self._journal_thread:  # a journal failure stopping
            self._publish_notice(draft)
        else:
            self._journal_q.put(draft)  # in order with the frames before it

    def _publish_notice(self, draft: _NoticeDraft) -> None:
        notice = draft.kind(position=self.hub.count, **draft.fields)
        with self._runs_lock:
            if isinstance(notice, EventFailed):
                draft.run.failures.append(notice)
            else:
                draft.run.done = notice
        self.queue_log.notice(notice)
        if isinstance(notice, CommandDone):  # the queue log answers for it from now on
            with self._runs_lock:
                self._runs.pop(notice.command_id, None)
        self.hub.publish_notice(notice)  # and into notices.jsonl

    def command_status(self, command_id: str) -> CommandStatus | None:
        """A queued command's progress and outcome (None: never queued on this data dir)."""
        with self._runs_lock:
            run = self._runs.get(command_id)
            if run is None:  # over (this session's: as `run` answered), or an earlier session's
                status = self.queue_log.status(command_id)
                if status is not None and status.session == self.session_id:
                    return status.model_copy(update={"ran": None})
                return status
            return CommandStatus(
                command_id=run.command_id,
                tag=run.tag,
                state="done" if run.done is not None else "queued",
                events=run.events,
                stream_from=run.stream_from,
                failures=list(run.failures),
                done=run.done,
                session=self.session_id,
            )

    def memory_footprint(self) -> dict[str, int]:
        """What the agent holds in memory per frame and per command, each bounded whatever the
        session's length: the journal index's bytes (its window), the commands still running,
        the queue log's open commands and the notices kept for streams."""
        with self._runs_lock:
            runs = len(self._runs)
        return {
            "journal_index_bytes": self.journal.index_memory_bytes,
            "command_runs": runs,
            "open_commands": self.queue_log.open_commands(),
            "notices_in_memory": self.hub.notices_in_memory,
        }

    # state ----------------------------------------------------------------------------------

    def state(self) -> EdgeState:
        core = self.core
        x, y = core.getXYPosition()
        runner = core.mda
        if runner.is_paused():
            run_state = "paused"
        elif self._current is not None or self._events.qsize() > 0:
            run_state = "acquiring"
        else:
            run_state = "idle"
        device, prop = self.settings.intensity_property
        with self._dose_lock:
            dose = DoseAccount(
                used_mj=self.guard.ledger.used_mj,
                reserved_mj=self._dose_reserved_nj / 1e6,
                budget_mj=self.envelope.light_dose_budget_mj,
            )
        return EdgeState(
            simulated=self.simulated,
            stage=StagePosition(x=x, y=y, z=core.getPosition()),
            channel=core.getCurrentConfig(self.settings.channel_group) or None,
            objective=core.getCurrentConfig(self.settings.objective_group) or None,
            pixel_size_um=core.getPixelSizeUm(),
            pixel_affine=_pixel_affine(core),
            image_width=core.getImageWidth(),
            image_height=core.getImageHeight(),
            exposure_ms=core.getExposure(),
            intensity=_float_property(core, device, prop),
            run_state=run_state,
            queue_depth=self._events.qsize(),
            frames_acquired=self._frames_acquired,
            frames_journaled=self.hub.count,
            light_dose=dose,
            journal=str(self.journal.root),
            last_error=self.last_error,
        )

    def truth(
        self, region: tuple[float, float, float, float] | None, t_s: float | None
    ) -> dict[str, Any]:
        if self._truth is None:
            raise HardwareError("ground truth exists only for the simulated microscope")
        limits, env = self.settings.limits, self.envelope
        check_truth_time(t_s, self._truth.clock(), limits.truth_horizon_s)
        slide = (env.x_limits_um[0], env.y_limits_um[0], env.x_limits_um[1], env.y_limits_um[1])
        check_truth_region(region, slide, limits.max_truth_area_mm2)
        return self._truth.cells(region, t_s)

    def inject_faults(
        self, snap: int, stage: int, *, hang: int = 0, clear: bool = False
    ) -> dict[str, int]:
        """Simulated microscope only: the next ``snap`` snaps and ``stage`` XY moves fail, the
        next ``hang`` XY moves never finish (the core's wait for the stage times out)."""
        if self._truth is None or self._truth.faults is None:
            raise HardwareError("faults can be injected only into the simulated microscope")
        return self._truth.faults(snap, stage, clear, hang)

    def _hardware_context(self) -> HardwareContext:
        device, prop = self.settings.intensity_property
        return HardwareContext(
            channel=self.core.getCurrentConfig(self.settings.channel_group) or None,
            exposure_ms=self.core.getExposure(),
            intensity=_float_property(self.core, device, prop),
            channel_group=self.settings.channel_group,
            intensity_property=(device, prop),
            stage=self.guard.stage(),
            field_um=field_of_view_um(self.core),
        )

    # acquisition thread -----------------------------------------------------------------------

    def _acquire_loop(self) -> None:
        while not self._shutdown.is_set():
            self._stop_run.clear()
            try:
                self.core.mda.run(self._next_events())
            except Exception as exc:  # the run itself failed; queued events are dropped
                item = self._current_item
                if item is not None and not self._current_failed:
                    self._current_failed = True
                    self._notify(
                        EventFailed,
                        item.run,
                        event_number=item.number,
                        event=item.event.model_dump(
                            mode="json", exclude_unset=True, exclude={"metadata"}
                        ),
                        step="run",
                        device=None,
                        error=f"the acquisition run failed: {exc}",
                        fix="see the edge's log and `GET /v1/state` (last_error); every queued "
                        "event was dropped: submit what is still needed again",
                        attempts=1,
                        policy=item.policy.text(),
                        action="aborted",
                    )
                dropped = self._drop_queued()
                self.last_error = (
                    f"acquisition stopped at event {self._current!r}: {exc}; "
                    f"{dropped} queued events were dropped"
                )
                log.error("%s", self.last_error)
            finally:
                self._finish_current()

    def _next_events(self) -> Iterator[useq.MDAEvent]:
        while True:
            self._finish_current()  # the runner asks for the next event: the last one is over
            try:
                item = self._events.get(timeout=0.05)
            except queue.Empty:
                if self._stop_run.is_set() or self._shutdown.is_set():
                    return
                continue
            if item is _SHUTDOWN:
                return
            assert isinstance(item, _Queued)
            if self._stop_run.is_set():  # taken out just as a stop came
                item.run.stopped = True
                self._drop(item)
                return
            with self._dose_lock:  # the guard charges the dose in force when the frame is taken
                self._dose_reserved_nj -= item.dose_nj
            if item.pump_run is not None:  # charged by the device runner when it pumps
                self.pumps.release(item.pump_run)
            self._current, self._current_item = item.event, item
            self._current_frames_from = item.run.frames
            with command_scope(item.command_id, item.number, item.tag):
                yield item.event

    def _on_frame(self, img: np.ndarray, event: useq.MDAEvent, meta: dict[str, Any]) -> None:
        t_ready = time.time_ns()
        core = self.core
        position = meta.get("position") or {}
        x = position.get("x")
        y = position.get("y")
        if x is None or y is None:
            x, y = core.getXYPosition()
        z = position.get("z")
        if z is None:
            z = core.getPosition()
        channel = (
            event.channel.config
            if event.channel is not None
            else core.getCurrentConfig(self.settings.channel_group) or None
        )
        pixels = np.array(img, copy=True) if not img.flags.owndata else img
        index = self._frames_acquired
        item = self._current_item
        if item is not None:
            with self._runs_lock:
                item.run.frames += 1
        header = {
            "event": event.model_dump(mode="json", exclude_unset=True, exclude={"metadata"}),
            "shape": pixels.shape,
            "dtype": pixels.dtype.str,
            "nbytes": pixels.nbytes,
            "stage": {"x": x, "y": y, "z": z},
            "pixel_size_um": float(meta.get("pixel_size_um") or core.getPixelSizeUm()),
            "pixel_affine": _pixel_affine(core),
            "channel": channel,
            "exposure_ms": float(meta.get("exposure_ms") or core.getExposure()),
            "t_ready_ns": t_ready,
            "command_id": item.command_id if item is not None else None,
            "tag": item.tag if item is not None else None,
            "sample_time_s": self._truth.clock() if self._truth is not None else None,
            **(exposure.meta() if (exposure := self.guard.last_exposure) is not None else {}),
        }
        self._frames_acquired += 1
        self._journal_q.put(
            (index, pixels, header)
        )  # blocks when the disk falls behind: never drops

    # journal thread ---------------------------------------------------------------------------

    def _journal_loop(self) -> None:
        while True:
            item = self._journal_q.get()
            if item is _SHUTDOWN:
                return
            if isinstance(item, _NoticeDraft):
                self._publish_notice(item)
                continue
            if callable(item):  # bookkeeping that must follow the frames before it
                item()
                continue
            expected, pixels, partial = item  # type: ignore[misc]
            try:
                self._journal_and_publish(expected, pixels, partial)
            except Exception as exc:  # the frame is not announced; acquisition must not go on
                self.last_error = (
                    f"journaling frame {expected} failed, acquisition stopped: {exc}; "
                    f"frames before it are safe in {self.journal.root}"
                )
                log.exception("%s", self.last_error)
                self._stop()

    def _journal_and_publish(self, expected: int, pixels: np.ndarray, partial: dict) -> None:
        if self.ring is not None and self.ring.fits(pixels):
            self.ring.write(expected, pixels)
        partial["checksum"] = checksum(pixels)
        partial["t_handoff_ns"] = time.time_ns()
        index = self.journal.append(pixels, partial, pixel_size_um=partial["pixel_size_um"])
        if index != expected:
            raise HardwareError(f"the journal gave index {index} to frame {expected}")
        header = FrameHeader.from_journal(index, partial, t_journaled_ns=time.time_ns())
        self.hub.publish(Frame(header, pixels))

    def _read_back(self, index: int) -> Frame:
        header = FrameHeader.from_journal(index, self.journal.read_meta(index)["meta"])
        return Frame(header, self.journal.read(index))


def _drain(events: queue.Queue[Any]) -> list[Any]:
    items = []
    while True:
        try:
            items.append(events.get_nowait())
        except queue.Empty:
            return items


def _pixel_affine(core: CMMCorePlus) -> tuple[float, float, float, float, float, float]:
    affine = tuple(float(v) for v in core.getPixelSizeAffine())
    if len(affine) != 6 or not any(affine):  # no affine configured: camera axes = stage axes
        px = core.getPixelSizeUm()
        return (px, 0.0, 0.0, 0.0, px, 0.0)
    return affine  # type: ignore[return-value]


def _shm_ring(slots: int, frame_bytes: int) -> ShmRing | None:
    """The ring for same-host consumers; without room for it the edge still runs, and its
    consumers get the frames over the stream."""
    if not slots:
        return None
    try:
        return ShmRing.create(slots, frame_bytes)
    except ShmRingUnavailable as exc:
        log.warning("no shared-memory ring: %s", exc)
        return None


def _frame_bytes(core: CMMCorePlus) -> int:
    return core.getImageWidth() * core.getImageHeight() * core.getBytesPerPixel()


def _float_property(core: CMMCorePlus, device: str, prop: str) -> float | None:
    try:
        return float(core.getProperty(device, prop))
    except (RuntimeError, ValueError):
        return None


@contextmanager
def _hardware(doing: str) -> Iterator[None]:
    """Turn a driver failure into a HardwareError that says what was being done."""
    try:
        yield
    except (EnvelopeViolation, HardwareError):
        raise
    except Exception as exc:
        raise HardwareError(f"failed to {doing}: {exc}") from exc
