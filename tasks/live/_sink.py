"""The command sink: a policy's commands to the edge, with ids a retry or re-run repeats.

A command's id is ``<run>.<phase>.<key>``, ``key`` naming the step (a time point and position,
a frame): a Prefect retry of the phase, or a re-run of the flow under the same run id, sends
the same ids, and the edge runs each id once (``repeat=True`` answers the rest). Direct
commands go over the edge's open command channel (a fraction of a millisecond); acquisitions
are queued over HTTP with the id, and each frame they produce names it. Commands due later
(``Acquire.due_s``) wait here until their time.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass

import useq

from scopeflow import CommandAck, EdgeRejected
from tasks.decisions import Acquire, Command, Direct
from tasks.hardware import EdgeClient

__all__ = ["CommandSink", "SentCommand", "command_id"]


def command_id(run_id: str, phase: str, key: str) -> str:
    """The deterministic id of step ``key`` of ``phase`` in run ``run_id`` (edge-safe)."""
    raw = f"{run_id}.{phase}.{key}"
    safe = "".join(c if c.isalnum() or c in "._:-" else "-" for c in raw)
    return safe[:128]


@dataclass(frozen=True)
class SentCommand:
    """What became of one command: acknowledged (maybe as a repeat) or refused, and when."""

    command_id: str
    kind: str
    ack: CommandAck | None
    refused: str | None
    sent_ns: int
    answered_ns: int
    frames_expected: int


class CommandSink:
    """``sink.schedule(commands)``; ``sink.pump()`` sends what is due; ``sink.close()``."""

    def __init__(self, client: EdgeClient, *, run_id: str, phase: str) -> None:
        self.run_id = run_id
        self.phase = phase
        self.prefix = command_id(run_id, phase, "")
        self._client = client
        self._channel = client.command_channel()
        self._due: list[tuple[float, int, Command]] = []
        self._order = itertools.count()
        self._started = time.monotonic()

    def restart_clock(self) -> None:
        """Due times count from now (the loop's start)."""
        self._started = time.monotonic()

    def schedule(self, commands: tuple[Command, ...]) -> list[SentCommand]:
        """Send what is due now; keep the rest for ``pump``."""
        for command in commands:
            due = command.due_s if isinstance(command, Acquire) else 0.0
            heapq.heappush(self._due, (self._started + due, next(self._order), command))
        return self.pump()

    def pump(self) -> list[SentCommand]:
        sent = []
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, _, command = heapq.heappop(self._due)
            sent.append(self._send(command))
        return sent

    def seconds_to_next(self) -> float | None:
        if not self._due:
            return None
        return max(0.0, self._due[0][0] - time.monotonic())

    def pending(self) -> int:
        return len(self._due)

    def edge_error(self) -> str | None:
        """The edge's last error, for messages."""
        return self._client.state().last_error

    def close(self) -> None:
        self._channel.close()

    def _send(self, command: Command) -> SentCommand:
        cid = command_id(self.run_id, self.phase, command.key)
        sent = time.time_ns()
        expected = 0
        try:
            if isinstance(command, Direct):
                ack = self._channel.command(command.command, command_id=cid)
            else:
                ack = self._client.submit_events(list(command.events), command_id=cid)
                expected = sum(_makes_a_frame(e) for e in command.events)
        except EdgeRejected as exc:
            return SentCommand(cid, _kind(command), None, str(exc), sent, time.time_ns(), 0)
        return SentCommand(cid, _kind(command), ack, None, sent, time.time_ns(), expected)


def _makes_a_frame(event: useq.MDAEvent) -> bool:
    """A device action or an autofocus event takes no frame: no one waits for one."""
    return event.action is None or event.action.type == "acquire_image"


def _kind(command: Command) -> str:
    return command.command.type if isinstance(command, Direct) else "acquire"
