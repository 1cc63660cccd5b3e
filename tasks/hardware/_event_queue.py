"""The accepted event queue, persisted: what an edge crash did to the work it had accepted.

``queue.jsonl`` under the data dir is an append-only log, one JSON line per fact:

- ``{"session", "start"}`` / ``{"session", "end"}``: an edge session began / shut down cleanly;
- ``{"accepted": command_id, "session", "tag", "events", "stream_from"}``: a command's events
  entered the queue (written before they do);
- ``{"finished": command_id, "how"}`` (ran / failed): one of its events is over; ``ran`` is
  written by the journal thread after the event's frames are in the journal, so a ``ran`` line
  means the frames are on disk (dropped events get no line: until the command's ``done`` they
  count as not run, which they are);
- ``{"failure": EventFailed}`` and ``{"done": CommandDone}``: its notices.

After a crash (a session with a start and no end) the events accepted and not finished were
lost with the process. They are **reported, not resumed**: an edge that comes back unattended
must not move the stage or illuminate for a request it cannot confirm is still wanted (the
client may have given up, or sent the work again under a new id). At the next start each such
command is settled as ``interrupted`` with ``not_run`` events (a ``{"interrupted": ...}`` line),
``GET /v1/commands/{id}`` says so, and a repeat of its id answers with that status, never a
bare "accepted". The crashed session's journal is recovered (a half-written frame rolled back)
so its stores are valid again.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from scopeflow import CommandAck, CommandDone, CommandStatus, EventFailed, JournalError
from tasks.storage import FrameJournal

__all__ = ["QueueLog", "repeat_ack"]

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.jsonl"


@dataclass(slots=True)
class _Record:
    command_id: str
    session: str
    tag: str | None
    events: int
    stream_from: int
    ran: int = 0
    failed: int = 0
    dropped: int = 0
    failures: list[EventFailed] = field(default_factory=list)
    done: CommandDone | None = None
    interrupted: bool = False

    def status(self) -> CommandStatus:
        finished = self.ran + self.failed + self.dropped
        if self.done is not None:
            state = "done"
        elif self.interrupted:
            state = "interrupted"
        else:
            state = "queued"
        return CommandStatus(
            command_id=self.command_id,
            tag=self.tag,
            state=state,
            events=self.events,
            stream_from=self.stream_from,
            failures=list(self.failures),
            done=self.done,
            ran=self.ran,
            not_run=self.events - finished if self.interrupted else 0,
            session=self.session,
        )


class QueueLog:
    """The persisted queue of one edge's data dir (see the module doc); thread-safe."""

    def __init__(self, data_dir: Path, session: str) -> None:
        self._path = data_dir / QUEUE_FILE
        self._session = session
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self.crashed_sessions: list[str] = []
        self.interrupted: list[CommandStatus] = []
        lines = self._path.read_text(encoding="utf-8").splitlines() if self._path.exists() else []
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = self._path.open("a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot open the event queue log {self._path}: {exc}") from exc
        self._replay(lines)
        self._settle(data_dir)
        self._write({"session": session, "start": True})

    # loading --------------------------------------------------------------------------------

    def _replay(self, lines: list[str]) -> None:
        started: list[str] = []
        ended: set[str] = set()
        for line in lines:
            try:
                entry = json.loads(line)
                self._apply(entry, started, ended)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: the fact it began never happened
        self.crashed_sessions = [s for s in started if s not in ended]

    def _apply(self, entry: dict[str, Any], started: list[str], ended: set[str]) -> None:
        if "start" in entry:
            started.append(entry["session"])
        elif "end" in entry:
            ended.add(entry["session"])
        elif "accepted" in entry:
            self._records[entry["accepted"]] = _Record(
                entry["accepted"],
                entry["session"],
                entry.get("tag"),
                int(entry["events"]),
                int(entry["stream_from"]),
            )
        elif "finished" in entry:
            record = self._records[entry["finished"]]
            how = entry["how"]
            record.ran += how == "ran"
            record.failed += how == "failed"
            record.dropped += how == "dropped"
        elif "failure" in entry:
            failure = EventFailed.model_validate(entry["failure"])
            self._records[failure.command_id or ""].failures.append(failure)
        elif "done" in entry:
            done = CommandDone.model_validate(entry["done"])
            self._records[done.command_id].done = done
        elif "interrupted" in entry:
            self._records[entry["interrupted"]].interrupted = True

    def _settle(self, data_dir: Path) -> None:
        """Commands of crashed sessions that never finished become ``interrupted``; the crashed
        sessions' journals are recovered."""
        crashed = set(self.crashed_sessions)
        for record in self._records.values():
            if record.session in crashed and record.done is None and not record.interrupted:
                record.interrupted = True
                self._write({"interrupted": record.command_id})
                status = record.status()
                self.interrupted.append(status)
                log.warning(
                    "command %s of crashed session %s: %d of %d events not run (reported as "
                    "interrupted, not resumed)",
                    record.command_id, record.session, status.not_run, record.events,
                )  # fmt: skip
        for session in self.crashed_sessions:
            _recover_journal(data_dir / "sessions" / session / "journal")
            self._write({"session": session, "end": True, "recovered": True})

    # writing --------------------------------------------------------------------------------

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def accepted(self, command_id: str, tag: str | None, events: int, stream_from: int) -> None:
        """``command_id``'s events are about to enter the queue."""
        with self._lock:
            record = _Record(command_id, self._session, tag, events, stream_from)
            self._records[command_id] = record
            self._write(
                {"accepted": command_id, "session": self._session, "tag": tag,
                 "events": events, "stream_from": stream_from}
            )  # fmt: skip

    def finished(self, command_id: str, how: str) -> None:
        """One of ``command_id``'s events ran (its frames journaled), failed or was dropped."""
        with self._lock:
            record = self._records.get(command_id)
            if record is None or self._file.closed:
                return
            record.ran += how == "ran"
            record.failed += how == "failed"
            record.dropped += how == "dropped"
            self._write({"finished": command_id, "how": how})

    def notice(self, notice: EventFailed | CommandDone) -> None:
        with self._lock:
            record = self._records.get(notice.command_id or "")
            if record is None or self._file.closed:
                return
            if isinstance(notice, EventFailed):
                record.failures.append(notice)
                self._write({"failure": notice.model_dump(mode="json")})
            else:
                record.done = notice
                self._write({"done": notice.model_dump(mode="json")})

    def status(self, command_id: str) -> CommandStatus | None:
        with self._lock:
            record = self._records.get(command_id)
            return record.status() if record is not None else None

    def close(self) -> None:
        """A clean shutdown: nothing of this session is left unaccounted for."""
        with self._lock:
            if not self._file.closed:
                self._write({"session": self._session, "end": True})
                self._file.close()


def repeat_ack(ack: CommandAck, status: CommandStatus | None) -> CommandAck:
    """A repeated command id's stored acknowledgement plus the truth about its work."""
    if status is None or not ack.repeat:
        return ack
    if status.state == "interrupted":
        work = (
            f"{status.ran} of its {status.events} events ran, {status.not_run} were NOT run: "
            f"the edge stopped without a clean shutdown (session {status.session}); submit "
            "what is still needed again under a new command id"
        )
    elif status.state == "done" and status.done is not None:
        done = status.done
        work = (
            f"it is over ({done.outcome}): {done.events - done.failed - done.dropped} of its "
            f"{done.events} events ran, {done.failed} failed, {done.dropped} were dropped"
        )
    else:
        work = f"its {status.events} events are queued or running"
    return ack.model_copy(
        update={"detail": f"repeat of an accepted command: no effect; {work}", "work": status}
    )


def _recover_journal(root: Path) -> None:
    if not root.is_dir():
        return
    try:
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            FrameJournal.open(root, writable=True).close()
        for note in notes:
            log.warning("%s", note.message)
    except JournalError as exc:
        log.error("cannot recover the journal %s of a crashed session: %s", root, exc)
