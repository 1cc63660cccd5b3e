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

Only the commands still open (accepted, not settled) are kept in memory, so memory does not
grow with the commands of a long session; a settled command's record (``done`` or
``interrupted``) goes to an on-disk index of the log (`LogIndex`, ``queue.jsonl.sqlite``) with
the open ones at that point, and a start reads the log only from there.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from scopeflow import CommandAck, CommandDone, CommandStatus, EventFailed, JournalError
from tasks.storage import FrameJournal

from ._log_index import LogIndex, read_lines

__all__ = ["QueueLog", "repeat_ack"]

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.jsonl"
_BATCH = 2000  # settled records per commit when catching up


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

    def dumps(self) -> str:
        return json.dumps(
            {
                "command_id": self.command_id,
                "session": self.session,
                "tag": self.tag,
                "events": self.events,
                "stream_from": self.stream_from,
                "ran": self.ran,
                "failed": self.failed,
                "dropped": self.dropped,
                "failures": [f.model_dump(mode="json") for f in self.failures],
                "done": None if self.done is None else self.done.model_dump(mode="json"),
                "interrupted": self.interrupted,
            }
        )

    @classmethod
    def loads(cls, text: str) -> _Record:
        fields = json.loads(text)
        failures = [EventFailed.model_validate(f) for f in fields.pop("failures")]
        done = fields.pop("done")
        return cls(
            **fields,
            failures=failures,
            done=None if done is None else CommandDone.model_validate(done),
        )


class QueueLog:
    """The persisted queue of one edge's data dir (see the module doc); thread-safe."""

    def __init__(self, data_dir: Path, session: str) -> None:
        self._path = data_dir / QUEUE_FILE
        self._session = session
        self._lock = threading.Lock()
        self._open: dict[str, _Record] = {}  # accepted, not settled: bounded by the queue
        self._sessions: list[str] = []  # started, not ended
        self.interrupted: list[CommandStatus] = []
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._index = LogIndex(data_dir / (QUEUE_FILE + ".sqlite"))
            end = self._replay()
            self._file: BinaryIO = self._path.open("ab")
            if self._file.tell() > end:  # a line cut short by a crash: end it, it stays unread
                self._file.write(b"\n")
                self._file.flush()
        except OSError as exc:
            raise JournalError(f"cannot open the event queue log {self._path}: {exc}") from exc
        self.crashed_sessions: list[str] = list(self._sessions)
        self._settle(data_dir)
        self._write({"session": session, "start": True})
        self._sessions.append(session)
        self._checkpoint([])

    # loading --------------------------------------------------------------------------------

    def _replay(self) -> int:
        """Read the log from where the index last saw it; returns the end of its last line."""
        start, state = self._index.position()
        size = self._path.stat().st_size if self._path.exists() else 0
        if size < start:  # not the log the index was made from
            self._index.clear()
            start, state = 0, None
        if state is not None:
            saved = json.loads(state)
            self._sessions = saved["sessions"]
            self._open = {r.command_id: r for r in map(_Record.loads, saved["open"])}
        settled: list[tuple[str, str]] = []
        end = start
        for end, line in read_lines(self._path, start):
            try:
                self._apply(json.loads(line), settled)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: the fact it began never happened
            if len(settled) >= _BATCH:
                self._index.put(settled, indexed_to=end, state=self._state())
                settled = []
        self._index.put(settled, indexed_to=end, state=self._state())
        return end

    def _apply(self, entry: dict[str, Any], settled: list[tuple[str, str]]) -> None:
        if "start" in entry:
            if entry["session"] not in self._sessions:
                self._sessions.append(entry["session"])
        elif "end" in entry:
            if entry["session"] in self._sessions:
                self._sessions.remove(entry["session"])
        elif "accepted" in entry:
            self._open[entry["accepted"]] = _Record(
                entry["accepted"],
                entry["session"],
                entry.get("tag"),
                int(entry["events"]),
                int(entry["stream_from"]),
            )
        elif "finished" in entry:
            record = self._open[entry["finished"]]
            how = entry["how"]
            record.ran += how == "ran"
            record.failed += how == "failed"
            record.dropped += how == "dropped"
        elif "failure" in entry:
            failure = EventFailed.model_validate(entry["failure"])
            self._open[failure.command_id or ""].failures.append(failure)
        elif "done" in entry:
            done = CommandDone.model_validate(entry["done"])
            record = self._open.pop(done.command_id)
            record.done = done
            settled.append((record.command_id, record.dumps()))
        elif "interrupted" in entry:
            record = self._open.pop(entry["interrupted"])
            record.interrupted = True
            settled.append((record.command_id, record.dumps()))

    def _settle(self, data_dir: Path) -> None:
        """Commands of crashed sessions that never finished become ``interrupted``; the crashed
        sessions' journals are recovered."""
        crashed = set(self.crashed_sessions)
        settled: list[tuple[str, str]] = []
        for record in list(self._open.values()):
            if record.session in crashed:
                record.interrupted = True
                self._write({"interrupted": record.command_id})
                del self._open[record.command_id]
                settled.append((record.command_id, record.dumps()))
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
            self._sessions.remove(session)
        self._checkpoint(settled)

    # writing --------------------------------------------------------------------------------

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write((json.dumps(entry) + "\n").encode())
        self._file.flush()

    def _state(self) -> str:
        """What a start needs besides the index and the log after it: the open commands and
        the sessions not ended (bounded: commands still queued, sessions alive)."""
        return json.dumps(
            {"sessions": self._sessions, "open": [r.dumps() for r in self._open.values()]}
        )

    def _checkpoint(self, settled: list[tuple[str, str]]) -> None:
        """Settled records into the index, with the log's end and the state there."""
        self._index.put(settled, indexed_to=self._file.tell(), state=self._state())

    def accepted(self, command_id: str, tag: str | None, events: int, stream_from: int) -> None:
        """``command_id``'s events are about to enter the queue."""
        with self._lock:
            record = _Record(command_id, self._session, tag, events, stream_from)
            self._open[command_id] = record
            self._write(
                {"accepted": command_id, "session": self._session, "tag": tag,
                 "events": events, "stream_from": stream_from}
            )  # fmt: skip

    def finished(self, command_id: str, how: str) -> None:
        """One of ``command_id``'s events ran (its frames journaled), failed or was dropped."""
        with self._lock:
            record = self._open.get(command_id)
            if record is None or self._file.closed:
                return
            record.ran += how == "ran"
            record.failed += how == "failed"
            record.dropped += how == "dropped"
            self._write({"finished": command_id, "how": how})

    def notice(self, notice: EventFailed | CommandDone) -> None:
        with self._lock:
            record = self._open.get(notice.command_id or "")
            if record is None or self._file.closed:
                return
            if isinstance(notice, EventFailed):
                record.failures.append(notice)
                self._write({"failure": notice.model_dump(mode="json")})
            else:
                record.done = notice
                self._write({"done": notice.model_dump(mode="json")})
                del self._open[record.command_id]
                self._checkpoint([(record.command_id, record.dumps())])

    def status(self, command_id: str) -> CommandStatus | None:
        with self._lock:
            record = self._open.get(command_id)
            if record is not None:
                return record.status()
            settled = self._index.get(command_id)
        return None if settled is None else _Record.loads(settled).status()

    def open_commands(self) -> int:
        """Commands held in memory: accepted and not settled (the rest are on disk)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """A clean shutdown: nothing of this session is left unaccounted for."""
        with self._lock:
            if not self._file.closed:
                self._write({"session": self._session, "end": True})
                if self._session in self._sessions:
                    self._sessions.remove(self._session)
                self._checkpoint([])
                self._file.close()
                self._index.close()


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
