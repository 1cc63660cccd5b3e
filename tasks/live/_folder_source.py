"""A watched folder as a frame source: microscopes without an API (a ZEISS SEM, a Thermo
Fisher TEM) join the live loop through the files they write.

Polling, not inotify: acquisition PCs share their output folder over SMB/NFS, where the
kernel's change notifications never see writes made by the other host; a directory listing
every ``poll_s`` does, costs milliseconds for thousands of tiles, and is what a restart needs
anyway (to find what arrived while the watcher was down).

Each file matching the vendor profile's patterns is handed on once it is complete (see
``CompletionRule``), as a ``LiveFrame`` whose payload is a ``FileRef``: the worker that
analyses it reads the pixels itself (from the share), only the path travels. The header holds
what the file's metadata says (shape, pixel size, stage position) and ``t_ready_ns`` is the
moment the file was found complete. Every file is claimed in the ``IngestLedger`` before it is
handed on; the consumer calls ``done(frame, result)`` when finished with it. A folder that
disappears (a share unmounted) is reported once and watched for again; nothing is lost.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import FrameHeader, StagePosition
from tasks.storage.convert import read_tile

from ._completeness import VENDOR_PROFILES, VendorProfile, open_on_this_host, structure_complete
from ._ledger import IngestLedger, LedgerEntry
from ._sources import LiveFrame

__all__ = ["FileListSource", "FileRef", "WatchedFolderSource", "file_frame"]

log = logging.getLogger(__name__)

_IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".xml", ".json")


class FileChanged(RuntimeError):
    """The file changed after it was found complete (rewritten by the microscope)."""


@dataclass(frozen=True)
class FileRef:
    """A complete file in a watched folder; ``load()`` reads its first plane (on a worker)."""

    path: Path
    key: str
    size: int
    mtime_ns: int

    def load(self) -> np.ndarray:
        st = self.path.stat()
        if st.st_size != self.size:
            raise FileChanged(
                f"{self.key} is now {st.st_size} bytes, it was {self.size} when found complete; "
                "the microscope is still writing it: make the completion rule stricter"
            )
        tile = read_tile(self.path)
        assert tile.pixels is not None
        return tile.pixels


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    since: float  # monotonic time the size/mtime were first seen as they are now


class WatchedFolderSource:
    """Complete files under ``folder`` (recursively), oldest first, each once across
    restarts (``ledger``: default ``<folder>/.scopeflow/ingest.jsonl``). ``idle_stop_s``:
    end after this long with nothing new and nothing pending; ``stop_after``: end once the
    ledger holds this many files (an acquisition of known size); neither: run until
    ``stop()``."""

    def __init__(
        self,
        folder: Path,
        *,
        profile: VendorProfile | str = "zeiss-sem",
        ledger: Path | None = None,
        poll_s: float = 0.1,
        idle_stop_s: float | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.profile = VENDOR_PROFILES[profile] if isinstance(profile, str) else profile
        self.ledger = IngestLedger(ledger or self.folder / ".scopeflow" / "ingest.jsonl")
        self.poll_s = poll_s
        self.idle_stop_s = idle_stop_s
        self.stop_after = stop_after
        self.missing_events = 0
        self._candidates: dict[str, _Candidate] = {}
        self._stopped = False

    # ------------------------------------------------------------------------------ API

    def frames(self) -> Iterator[LiveFrame]:
        for entry in self.ledger.pending():  # claimed before a restart, never finished
            path = self.folder / entry.key
            yield self._frame(entry, path)
        idle_since = time.monotonic()
        missing = False
        while not self._stopped:
            try:
                found = self._complete_files()
            except FileNotFoundError:
                if not missing:
                    self.missing_events += 1
                    log.warning(
                        "watched folder %s is gone (unmounted share?); waiting for it to come back",
                        self.folder,
                    )
                missing = True
                time.sleep(self.poll_s)
                continue
            if missing:
                log.warning("watched folder %s is back", self.folder)
                missing = False
            for key, path, cand in found:
                entry = self.ledger.claim(key, cand.size, cand.mtime_ns)
                self._candidates.pop(key, None)
                idle_since = time.monotonic()
                yield self._frame(entry, path)
                if self._stopped:
                    return
            if self.stop_after is not None and len(self.ledger.entries) >= self.stop_after:
                return
            if found or self._candidates:
                idle_since = time.monotonic()
            elif self.idle_stop_s is not None and time.monotonic() - idle_since > self.idle_stop_s:
                return
            time.sleep(self.poll_s)

    def done(self, frame: LiveFrame, result: dict[str, Any] | None = None) -> bool:
        """Record that ``frame``'s file is finished (False: it already was)."""
        return self.ledger.done(frame.payload.key, result)

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self.ledger.close()

    # ------------------------------------------------------------------------------ scan

    def _complete_files(self) -> list[tuple[str, Path, _Candidate]]:
        now = time.monotonic()
        rule = self.profile.rule
        ready: list[tuple[float, str, Path, _Candidate]] = []
        if not self.folder.is_dir():
            raise FileNotFoundError(self.folder)
        for path, st in self._listing():
            key = path.relative_to(self.folder).as_posix()
            if key in self.ledger.entries:
                continue
            cand = self._candidates.get(key)
            if cand is None or (cand.size, cand.mtime_ns) != (st.st_size, st.st_mtime_ns):
                cand = _Candidate(st.st_size, st.st_mtime_ns, now)
                self._candidates[key] = cand
            waited = now - cand.since
            if self._complete(path, cand, waited) or waited >= rule.give_up_s:
                ready.append((st.st_mtime_ns, key, path, cand))
        ready.sort()
        return [(key, path, cand) for _, key, path, cand in ready]

    def _listing(self) -> Iterator[tuple[Path, os.stat_result]]:
        stack = [self.folder]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as it:
                for item in it:
                    if item.name.startswith("."):
                        continue
                    if item.is_dir(follow_symlinks=False):
                        stack.append(Path(item.path))
                        continue
                    if item.name.lower().endswith(_IGNORED_SUFFIXES):
                        continue
                    if not any(
                        fnmatch.fnmatch(item.name.lower(), p) for p in self.profile.patterns
                    ):
                        continue
                    try:
                        st = item.stat()
                    except FileNotFoundError:
                        continue  # gone between listing and stat (a rename)
                    yield Path(item.path), st

    def _complete(self, path: Path, cand: _Candidate, waited: float) -> bool:
        rule = self.profile.rule
        if rule.kind == "size_stable" and waited < rule.stable_s:
            return False
        if rule.kind == "sidecar" and not path.with_suffix(rule.sidecar_suffix).exists():
            return False
        if rule.kind == "closed" and open_on_this_host(path):
            return False
        return not rule.check_structure or structure_complete(path, cand.size) is None

    def _frame(self, entry: LedgerEntry, path: Path) -> LiveFrame:
        ref = FileRef(path, entry.key, entry.size, entry.mtime_ns)
        return file_frame(ref, entry.index, self.folder.name)


class FileListSource:
    """Existing files, in the order given, as frames (``scopeflow qc`` on a folder or a
    file): no waiting, no ledger. Keys are the paths relative to ``root``."""

    def __init__(self, paths: list[Path], root: Path) -> None:
        self.paths = paths
        self.root = root
        self._stopped = False

    def frames(self) -> Iterator[LiveFrame]:
        for index, path in enumerate(self.paths):
            if self._stopped:
                return
            st = path.stat()
            key = path.relative_to(self.root).as_posix() if path != self.root else path.name
            yield file_frame(FileRef(path, key, st.st_size, st.st_mtime_ns), index, self.root.name)

    def stop(self) -> None:
        self._stopped = True


def file_frame(ref: FileRef, index: int, root_name: str) -> LiveFrame:
    """The frame of a complete file: its metadata in the header, ``ref`` as the payload (the
    worker reads the pixels); a file whose metadata cannot be read still becomes a frame,
    with ``event["error"]``, so its verdict says what is wrong."""
    path = ref.path
    now = time.time_ns()
    event: dict[str, Any] = {"index": {"p": index}, "file": ref.key}
    stage = StagePosition(x=0.0, y=0.0, z=0.0)
    shape, dtype, pixel_um = (0, 0), "uint8", 1.0
    try:
        meta = read_tile(path, pixels=False)
    except Exception as exc:  # unreadable: the analyzer's verdict says so
        event["error"] = f"{type(exc).__name__}: {exc}"
    else:
        shape, dtype = meta.shape, meta.dtype
        event["format"] = meta.format_name
        if meta.pixel_size_um is not None:
            pixel_um = meta.pixel_size_um
            event["pixel_size_known"] = True
        if meta.stage_x_um is not None and meta.stage_y_um is not None:
            stage = StagePosition(x=meta.stage_x_um, y=meta.stage_y_um, z=0.0)
            event["stage_known"] = True
    region = str(Path(ref.key).parent)
    event["region"] = root_name if region == "." else region
    header = FrameHeader(
        index=index,
        event=event,
        shape=shape,
        dtype=dtype,
        nbytes=ref.size,
        stage=stage,
        pixel_size_um=pixel_um,
        channel=None,
        exposure_ms=0.0,
        t_ready_ns=now,
        t_journaled_ns=now,
        checksum=f"file:{ref.size}:{ref.mtime_ns}",
        tag=ref.key,
    )
    return LiveFrame(header, ref, now, ref.load)
