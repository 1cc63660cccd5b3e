"""FrameJournal: the edge agent's append-only, crash-safe store of every acquired frame.

Each job has its module: the folder layout and shared state (`_journal_layout`), appending in
crash-safe order (`_journal_writer`), scanning and refreshing (`_journal_reader`) and rolling
back what a crash left half-done (`_journal_recovery`). This class opens a journal and hands
each call to them, under one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import Closeable, JournalError

from . import _journal_reader as reader
from ._frame_index import DEFAULT_WINDOW, FrameIndex, check_window
from ._fsutil import WriterLock, atomic_write_bytes
from ._journal_layout import JOURNAL_FILE, LOCK_FILE, LOG_FILE, JournalState, now, read_doc
from ._journal_recovery import recover
from ._journal_writer import JournalWriter, check_pixel_size, check_pixels
from ._log import Record
from ._ngff import COMPRESSIONS, Compression, warm_up

__all__ = ["FrameJournal"]


class FrameJournal(Closeable):
    """Frames grouped into OME-Zarr series stores plus a JSON-lines metadata log.

    Build one with :meth:`create` or :meth:`open`; the constructor is private.
    """

    def __init__(
        self,
        root: Path,
        *,
        writable: bool,
        doc: dict[str, Any],
        lock: WriterLock | None,
        prewrite: int = 2,
        index_window: int = DEFAULT_WINDOW,
    ) -> None:
        self._state = JournalState.from_doc(root, doc)
        self._state.records = FrameIndex(self._state.log_path, index_window)
        self._writable = writable
        self._writer_lock = lock
        self._lock = threading.RLock()
        self._closed = False
        self._writer = JournalWriter(self._state, prewrite=prewrite) if writable else None

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        compression: Compression = "none",
        name: str = "scopeflow journal",
        prewrite: int = 2,
        index_window: int = DEFAULT_WINDOW,
    ) -> FrameJournal:
        """Start a new, empty journal in ``root``, which must be missing or an empty folder.

        ``prewrite``: how many chunk files a background thread keeps written ahead, so that an
        append overwrites cached pages instead of allocating new ones (uncompressed only; 0 off).
        ``index_window``: how many of the last frames' locations stay in memory; an older frame
        is found in ``frames.jsonl`` (a few reads), so memory does not grow with the frames.
        """
        root = Path(root)
        check_window(index_window)
        if compression not in COMPRESSIONS:
            raise JournalError(
                f"unknown compression {compression!r} for {root}; use one of {list(COMPRESSIONS)}"
            )
        if root.exists() and not root.is_dir():
            raise JournalError(f"{root} is a file; give FrameJournal.create a folder path")
        if root.is_dir() and any(root.iterdir()):
            hint = (
                "re-open it with FrameJournal.open(root, writable=True)"
                if (root / JOURNAL_FILE).exists()
                else "pick a new folder or empty this one"
            )
            raise JournalError(f"{root} is not empty; {hint}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = WriterLock(root / LOCK_FILE)
            if not lock.acquire():
                raise JournalError(
                    f"{root} is being created by another process; use another folder"
                )
            doc = {"name": name, "compression": compression, "created": now()}
            journal = cls(
                root,
                writable=True,
                doc=doc,
                lock=lock,
                prewrite=prewrite,
                index_window=index_window,
            )
            writer = journal._writer
            assert writer is not None
            warm_up()
            atomic_write_bytes(root / LOG_FILE, b"")
            writer.write_journal_json()
            writer.open_log()
        except OSError as exc:
            raise JournalError(
                f"cannot create a journal in {root}: {exc.strerror or exc}; check that the folder "
                "is writable and the disk has space"
            ) from exc
        return journal

    @classmethod
    def open(
        cls, root: Path, *, writable: bool = False, index_window: int = DEFAULT_WINDOW
    ) -> FrameJournal:
        """Re-open an existing journal, recovering a consistent state after a crash.

        Read-only (the default) changes nothing on disk and sees frames appended later by the
        writer. ``writable=True`` takes the writer lock, then rolls back whatever a crash left
        half-done (a cut-off last log line, pixels without a log line) so appends can go on.
        """
        root = Path(root)
        check_window(index_window)
        doc_path = root / JOURNAL_FILE
        if not doc_path.is_file():
            raise JournalError(
                f"{root} is not a frame journal (no {JOURNAL_FILE}); create one with "
                "FrameJournal.create(root) or check the path"
            )
        lock: WriterLock | None = None
        if writable:
            lock = WriterLock(root / LOCK_FILE)
            try:
                got = lock.acquire()
            except OSError as exc:
                raise JournalError(
                    f"cannot lock {root / LOCK_FILE} for writing: {exc}; check folder permissions"
                ) from exc
            if not got:
                raise JournalError(
                    f"{root} is already open for writing by another FrameJournal (this or another "
                    "process); close that one first, or open read-only"
                )
        try:
            doc = read_doc(doc_path)
            journal = cls(root, writable=writable, doc=doc, lock=lock, index_window=index_window)
            reader.load(journal._state, repair=writable)
            if journal._writer is not None:
                warm_up()
                recover(journal._state, journal._writer)
                journal._writer.open_log()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return journal

    # ----------------------------------------------------------------- public API

    @property
    def root(self) -> Path:
        return self._state.root

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def compression(self) -> Compression:
        return self._state.compression

    @property
    def stores(self) -> list[Path]:
        """The OME-Zarr image stores written so far, series 0, 1, ..."""
        self._refresh()
        return [s.store for s in self._state.series]

    def __len__(self) -> int:
        self._refresh()
        return len(self._state.records)

    @property
    def index_memory_bytes(self) -> int:
        """Memory held by the frame index: its window of recent frames, whatever their count."""
        return self._state.records.memory_bytes()

    def append(
        self,
        pixels: np.ndarray,
        meta: Mapping[str, Any],
        *,
        pixel_size_um: float | None = None,
    ) -> int:
        """Write one 2D frame and its metadata; return its global index (0, 1, 2, ...).

        When this returns, the pixels are in the frame's series store and the metadata line is
        in ``frames.jsonl`` (handed to the OS, not fsynced: call :meth:`flush` for that).
        """
        frame = check_pixels(pixels)
        px = check_pixel_size(pixel_size_um)
        if not isinstance(meta, Mapping):
            raise JournalError(
                f"append to {self.root}: meta must be a mapping (dict), got {type(meta).__name__}"
            )
        with self._lock:
            writer = self._check_writable()
            return writer.append(frame, px, meta)

    def read(self, index: int) -> np.ndarray:
        """The pixels of frame ``index`` (native byte order)."""
        rec = self._record(index)
        return self._state.series[rec.series].read(rec.series_index)

    def read_meta(self, index: int) -> dict[str, Any]:
        """``{"index", "series", "series_index", "meta"}``: ``meta`` is what was appended."""
        return reader.read_meta(self._state, index, self._record(index))

    def refresh(self) -> int:
        """Read-only journals: pick up frames the writer appended since; returns ``len(self)``."""
        self._refresh()
        return len(self._state.records)

    def flush(self) -> None:
        """fsync every file and folder written since the last flush (pixels and metadata)."""
        with self._lock:
            if self._closed or self._writer is None:
                return
            try:
                self._writer.fsync_all()
            except OSError as exc:
                raise JournalError(
                    f"cannot fsync the journal in {self.root}: {exc.strerror or exc}; check the "
                    "disk (full, removed, read-only?) before trusting frames since the last flush"
                ) from exc

    def close(self) -> None:
        """Flush (when writable), release the writer lock. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._writer is not None and self._writer.broken is None:
                    self.flush()
            finally:
                self._closed = True
                if self._writer is not None:
                    self._writer.close()
                if self._writer_lock is not None:
                    self._writer_lock.release()

    def __repr__(self) -> str:
        mode = "writable" if self._writable else "read-only"
        return (
            f"FrameJournal({str(self.root)!r}, {mode}, frames={len(self._state.records)}, "
            f"series={len(self._state.series)})"
        )

    # ----------------------------------------------------------------- checks, refresh

    def _check_writable(self) -> JournalWriter:
        if self._closed:
            raise JournalError(
                f"journal {self.root} is closed; open it again with FrameJournal.open(root)"
            )
        if self._writer is None:
            raise JournalError(
                f"journal {self.root} was opened read-only; use "
                "FrameJournal.open(root, writable=True) to append"
            )
        if self._writer.broken is not None:
            raise JournalError(
                f"journal {self.root} could not undo a failed write ({self._writer.broken}); "
                "close it and re-open it with FrameJournal.open(root, writable=True) to recover"
            )
        return self._writer

    def _record(self, index: int) -> Record:
        if self._closed:
            raise JournalError(
                f"journal {self.root} is closed; open it again with FrameJournal.open(root)"
            )
        if not isinstance(index, int | np.integer) or isinstance(index, bool):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        index = int(index)
        n = len(self._state.records)
        if not 0 <= index < n:
            n = self.refresh()
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"frame {index} not in journal {self.root} ({n} frames)")
        return self._state.records[index]

    def _refresh(self) -> None:
        """Read-only: append the log lines the writer added since the last look."""
        if self._writable or self._closed:
            return
        with self._lock:
            reader.refresh(self._state)
