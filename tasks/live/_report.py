"""What a loop reports: per-frame latency split, where frames were analysed, what was refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scopeflow import EventFailed
from tasks.decisions import Decision

from ._analyzer import Analysis, ModeSwitch
from ._sink import SentCommand

__all__ = ["LoopReport"]

PARTS = (
    "transport",
    "edge",
    "queue",
    "inference",
    "model",
    "decision",
    "command",
    "total",
    "waiting",
    "loop",
)


@dataclass
class LoopReport:
    """Latencies in ms per frame. ``total``: frame ready at the edge -> commands sent;
    ``waiting``: of that, the time the frame waited behind earlier frames (in the loop for a
    free worker, ``queue``, and on the workers); ``loop``: ``total`` less ``waiting``, what
    the loop itself takes for one frame (a backlog of frames queued faster than the workers
    analyse them shows in ``waiting``, not here). ``edge``: of ``transport``, the edge's own
    part (frame ready -> journaled, when the edge announces it)."""

    budget_ms: float | None = None
    latency: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
    analysed: dict[str, int] = field(default_factory=lambda: {"remote": 0, "local": 0})
    remote_missed: int = 0
    decided_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: list[SentCommand] = field(default_factory=list)
    commands: int = 0
    repeats: int = 0
    switches: list[ModeSwitch] = field(default_factory=list)
    failures: list[EventFailed] = field(default_factory=list)  # events the edge could not run
    state: Any = None  # the policy's state after the last frame

    @staticmethod
    def split(analysis: Analysis, decision: Decision, sent: list[SentCommand]) -> dict[str, float]:
        """Frame ready -> received -> submitted -> analysed -> decided -> commands answered."""
        h = analysis.frame.header
        received = analysis.frame.received_ns
        decided = decision.decided_ns or analysis.done_ns
        answered = max((s.answered_ns for s in sent), default=decided)
        total = (answered - h.t_ready_ns) / 1e6
        waiting = (analysis.submitted_ns - received) / 1e6 + analysis.waited_ms
        return {
            "transport": (received - h.t_ready_ns) / 1e6,
            "edge": (h.t_journaled_ns - h.t_ready_ns) / 1e6,
            "queue": (analysis.submitted_ns - received) / 1e6,
            "inference": (analysis.done_ns - analysis.submitted_ns) / 1e6,
            "model": analysis.model_ms,
            "decision": (decided - analysis.done_ns) / 1e6,
            "command": (answered - decided) / 1e6,
            "total": total,
            "waiting": waiting,
            "loop": total - waiting,
        }

    def add_frame(self, analysis: Analysis, decision: Decision, sent: list[SentCommand]) -> None:
        for part, value in self.split(analysis, decision, sent).items():
            self.latency[part].append(value)
        self.decided_ms.append((analysis.done_ns - analysis.frame.header.t_ready_ns) / 1e6)
        self.analysed[analysis.where] += 1
        self.remote_missed += int(analysis.remote_missed)
        if "error" in decision.summary:
            self.errors.append(f"frame {analysis.frame.index}: {decision.summary['error']}")

    def add_command(self, sent: SentCommand) -> None:
        self.commands += 1
        if sent.refused:
            self.refused.append(sent)
        elif sent.ack is not None and sent.ack.repeat:
            self.repeats += 1

    @property
    def frames(self) -> int:
        return len(self.latency["total"])

    def on_time_fraction(self) -> float | None:
        if self.budget_ms is None or not self.decided_ms:
            return None
        return float(np.mean(np.array(self.decided_ms) <= self.budget_ms))

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {
            part: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
            for part, v in self.latency.items()
            if v
        }

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "analysed": dict(self.analysed),
            "remote_missed": self.remote_missed,
            "fallback_decisions": self.analysed["local"],
            "on_time_fraction": self.on_time_fraction(),
            "budget_ms": self.budget_ms,
            "latency_ms": self.percentiles(),
            "commands": self.commands,
            "repeats": self.repeats,
            "refused": [f"{s.command_id}: {s.refused}" for s in self.refused],
            "errors": self.errors,
            "failures": [_failure(f) for f in self.failures],
            "switches": [
                {"frame": s.frame_index, "to": s.to, "reason": s.reason} for s in self.switches
            ],
        }

    def markdown(self) -> str:
        """The latency split as a table, and what happened, for a Prefect artifact."""
        rows = ["| part | p50 ms | p99 ms |", "| --- | ---: | ---: |"]
        for part, q in self.percentiles().items():
            rows.append(f"| {part} | {q['p50']:.2f} | {q['p99']:.2f} |")
        on_time = self.on_time_fraction()
        lines = [
            f"**{self.frames} frames**: {self.analysed['remote']} analysed on the workers, "
            f"{self.analysed['local']} by the local fallback model "
            f"({self.remote_missed} missed the deadline or failed remotely).",
            "",
            *rows,
            "",
        ]
        if on_time is not None:
            lines.append(f"Decided within {self.budget_ms:g} ms of frame ready: {on_time:.1%}.")
        for s in self.switches:
            lines.append(f"- frame {s.frame_index}: switched to **{s.to}** ({s.reason})")
        for s in self.refused:
            lines.append(f"- refused `{s.command_id}`: {s.refused}")
        lines.extend(f"- {e}" for e in self.errors)
        lines.extend(f"- edge: {_failure(f)}" for f in self.failures)
        return "\n".join(lines)


def _failure(failed: EventFailed) -> str:
    return (
        f"{failed.command_id} event {failed.event_number} {failed.action} after "
        f"{failed.attempts} attempt(s): {failed.error}; {failed.fix}"
    )
