"""The closed loop: frames from a source, analysed, decided by a policy, commands to the edge.

One call runs one phase of a live experiment inside one Prefect task (never a task per frame):

    report = run_loop(source, analyzer, policy, sink, decisions)

A reader thread pulls frames from the source as they come; the loop hands each to the analyzer
at once (work in flight bounded there), and decides frames strictly in order as their analyses
come back or their deadlines pass. Commands due later wait in the sink and go out on time
while the loop waits for frames. The loop ends when the policy says it is done, when the
source ends, or when nothing is in flight, queued or awaited.

An acquisition is awaited until its frames came or the edge's `CommandDone` for it arrives
(an event that failed, was skipped or was dropped produces no frame: the notice closes the
count); each `EventFailed` goes to the decision log and the report's ``failures``. As the last
resort the loop raises ``LoopStalled`` when acquisitions it sent produce nothing (no frame, no
notice) for ``frame_timeout_s``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from scopeflow import CommandDone, EventFailed, LoopStalled
from tasks.decisions import Decision, FrameView, Policy

from ._analyzer import Analysis, Analyzer
from ._decision_log import DecisionLog
from ._report import LoopReport
from ._routed import RoutedAnalyzer
from ._sink import CommandSink, SentCommand
from ._sources import FrameSource

__all__ = ["LoopSettings", "run_loop"]

_END = object()


@dataclass(frozen=True)
class LoopSettings:
    """``frame_timeout_s``: acquisitions outstanding and no frame for this long -> LoopStalled.
    ``budget_ms``: frame ready -> decision within this counts as on time (the report's
    ``on_time_fraction``); None: the analyzer's deadline."""

    frame_timeout_s: float = 60.0
    budget_ms: float | None = None


def run_loop(
    source: FrameSource,
    analyzer: Analyzer | RoutedAnalyzer,
    policy: Policy[Any],
    sink: CommandSink,
    decisions: DecisionLog,
    settings: LoopSettings | None = None,
) -> LoopReport:
    """Run the loop until the policy is done; returns the latency split and what happened."""
    settings = settings or LoopSettings()
    budget = settings.budget_ms or analyzer.settings.deadline_ms
    report = LoopReport(budget_ms=budget)
    state = policy.initial_state()
    expected: dict[str, int] = {}
    frames: queue.Queue[Any] = queue.Queue()
    reader = threading.Thread(target=_read, args=(source, frames), name="loop-source", daemon=True)
    sink.restart_clock()
    reader.start()

    def record(sent: list[SentCommand]) -> None:
        for command in sent:
            report.add_command(command)
            if command.frames_expected:
                expected[command.command_id] = (
                    expected.get(command.command_id, 0) + command.frames_expected
                )

    pending: deque[Any] = deque()
    source_ended = done = False
    last_frame = time.monotonic()
    record(sink.schedule(policy.first_commands(state)))
    try:
        while True:
            record(sink.pump())
            if pending and (frames.empty() or analyzer.ready(pending[0])):
                analysis = analyzer.wait(pending.popleft())
                state, decision, sent = _decide(policy, state, analysis, sink)
                record(sent)
                report.add_frame(analysis, decision, sent)
                decisions.write(_record(analysis, decision, sent))
                done = done or decision.done
                continue
            if not pending and (done or source_ended):
                break
            outstanding = sum(expected.values())
            if not pending and outstanding == 0 and sink.pending() == 0:
                break
            wait = sink.seconds_to_next()
            try:
                item = frames.get(timeout=0.05 if wait is None else min(wait, 0.05))
            except queue.Empty:
                if outstanding and time.monotonic() - last_frame > settings.frame_timeout_s:
                    raise LoopStalled(_stalled(expected, settings, sink)) from None
                continue
            if item is _END:
                source_ended = True
            elif isinstance(item, BaseException):
                raise item
            elif isinstance(item, EventFailed):
                last_frame = time.monotonic()  # the edge is alive and said what happened
                report.failures.append(item)
                decisions.write(item.model_dump(mode="json"))
            elif isinstance(item, CommandDone):
                last_frame = time.monotonic()
                if expected.pop(item.command_id, 0) and item.outcome != "completed":
                    decisions.write(item.model_dump(mode="json"))  # frames that never came
            else:
                last_frame = time.monotonic()
                cid = item.header.command_id
                if cid in expected:
                    expected[cid] -= 1
                    if expected[cid] <= 0:
                        del expected[cid]
                pending.append(analyzer.submit(item))
    finally:
        source.stop()
        report.switches = list(analyzer.switches)
        report.state = state
        decisions.write({"type": "end", **report.summary()})
    return report


def _decide(
    policy: Policy[Any], state: Any, analysis: Analysis, sink: CommandSink
) -> tuple[Any, Decision, list[SentCommand]]:
    view = FrameView.from_header(analysis.frame.header)
    try:
        state, decision = policy.decide(state, view, analysis.result)
    except ValueError as exc:  # the policy cannot use this result: logged, the loop goes on
        decision = Decision(summary={"error": str(exc)})
    decision = replace(decision, decided_ns=time.time_ns())
    return state, decision, sink.schedule(decision.commands)


def _record(analysis: Analysis, decision: Decision, sent: list[SentCommand]) -> dict[str, Any]:
    h = analysis.frame.header
    return {
        "type": "decision",
        "frame": h.index,
        "command_id": h.command_id,
        "event_index": h.event.get("index", {}),
        "stage": [h.stage.x, h.stage.y, h.stage.z],
        "sample_time_s": h.sample_time_s,
        "analysed": analysis.where,
        "remote_missed": analysis.remote_missed,
        "reason": analysis.reason,
        "objects": len(analysis.result) if hasattr(analysis.result, "__len__") else None,
        "decision": decision.summary,
        "commands": [
            {
                "id": s.command_id,
                "kind": s.kind,
                "repeat": s.ack.repeat if s.ack else None,
                "refused": s.refused,
            }
            for s in sent
        ],
        "latency_ms": LoopReport.split(analysis, decision, sent),
    }


def _read(source: FrameSource, out: queue.Queue[Any]) -> None:
    try:
        for frame in source.frames():
            out.put(frame)
    except BaseException as exc:  # handed to the loop's thread, which raises it
        out.put(exc)
    finally:
        out.put(_END)


def _stalled(expected: dict[str, int], settings: LoopSettings, sink: CommandSink) -> str:
    waiting = ", ".join(f"{cid} ({n} frames)" for cid, n in list(expected.items())[:5])
    edge_error = None
    with contextlib.suppress(Exception):
        edge_error = sink.edge_error()
    return (
        f"no frame for {settings.frame_timeout_s:g} s while waiting for {waiting}; the edge's "
        f"last error: {edge_error or 'none'}; check the edge (`GET /v1/state`) and re-run "
        "under the same run id to resume: commands already run are not repeated"
    )
