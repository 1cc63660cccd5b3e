"""FrameJournal: the edge agent's append-only, crash-safe store of every acquired frame.

Write order of one ``append`` (each step leaves the journal valid if the process dies after it):

1. the frame's chunk file ``sN.ome.zarr/0/c/t/0/0`` (beyond the array's shape: invisible);
2. the array's ``zarr.json`` with ``shape[0] = t + 1``, replaced atomically (the frame becomes
   visible to zarr readers; for a new series, steps 1-2 happen in a scratch folder that is
   renamed into place, then ``journal.json`` is replaced to list the new store);
3. one line in ``frames.jsonl``: the frame is now journaled and ``append`` returns its index.

A frame whose line is missing was never announced; ``open(..., writable=True)`` rolls it back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import threading
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import Closeable, JournalError

from ._fsutil import (
    WriterLock,
    atomic_write_bytes,
    dumps_json,
    fsync_dir,
    fsync_path,
    write_all,
)
from ._log import Record, complete_lines, parse_record
from ._ngff import COMPRESSIONS, Compression, warm_up
from ._series import Series, SeriesKey, create_series, dumps_journal, load_series
from ._warm import ChunkWarmer

__all__ = ["FrameJournal"]

JOURNAL_FILE = "journal.json"
LOG_FILE = "frames.jsonl"
LOCK_FILE = ".writer.lock"
WARM_FOLDER = ".warm.partial"  # pre-written chunk files; removed with the other partials
DISCARDED_FILE = "frames.jsonl.discarded"
_PIXEL_KINDS = "biuf"  # bool, signed/unsigned integers, floats: what zarr v3 and viewers handle


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
    ) -> None:
        self._root = root
        self._writable = writable
        self._writer_lock = lock
        self._lock = threading.RLock()
        self._closed = False
        self._broken: str | None = None
        self._name = str(doc.get("name", "scopeflow journal"))
        self._compression: Compression = doc.get("compression", "none")
        self._created = str(doc.get("created", ""))
        self._series: list[Series] = []
        self._by_key: dict[SeriesKey, Series] = {}
        self._records: list[Record] = []
        self._log_end = 0
        self._log_fd: int | None = None
        self._dirty: set[str] = set()  # written since the last flush
        self._log_path = str(root / LOG_FILE)
        self._warmer: ChunkWarmer | None = None
        self._prewrite = 2

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        compression: Compression = "none",
        name: str = "scopeflow journal",
        prewrite: int = 2,
    ) -> FrameJournal:
        """Start a new, empty journal in ``root``, which must be missing or an empty folder.

        ``prewrite``: how many chunk files a background thread keeps written ahead, so that an
        append overwrites cached pages instead of allocating new ones (uncompressed only; 0 off).
        """
        root = Path(root)
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
            doc = {"name": name, "compression": compression, "created": _now()}
            journal = cls(root, writable=True, doc=doc, lock=lock)
            journal._prewrite = prewrite
            warm_up()
            atomic_write_bytes(root / LOG_FILE, b"")
            journal._write_journal_json()
            journal._open_log()
        except OSError as exc:
            raise JournalError(
                f"cannot create a journal in {root}: {exc.strerror or exc}; check that the folder "
                "is writable and the disk has space"
            ) from exc
        return journal

    @classmethod
    def open(cls, root: Path, *, writable: bool = False) -> FrameJournal:
        """Re-open an existing journal, recovering a consistent state after a crash.

        Read-only (the default) changes nothing on disk and sees frames appended later by the
        writer. ``writable=True`` takes the writer lock, then rolls back whatever a crash left
        half-done (a cut-off last log line, pixels without a log line) so appends can go on.
        """
        root = Path(root)
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
            journal = cls(root, writable=writable, doc=_read_doc(doc_path), lock=lock)
            journal._load(repair=writable)
            if writable:
                warm_up()
                journal._recover()
                journal._open_log()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return journal

    # ----------------------------------------------------------------- public API

    @property
    def root(self) -> Path:
        return self._root

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def compression(self) -> Compression:
        return self._compression

    @property
    def stores(self) -> list[Path]:
        """The OME-Zarr image stores written so far, series 0, 1, ..."""
        self._refresh()
        return [s.store for s in self._series]

    def __len__(self) -> int:
        self._refresh()
        return len(self._records)

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
        frame = _check_pixels(pixels)
        px = _check_pixel_size(pixel_size_um)
        if not isinstance(meta, Mapping):
            raise JournalError(
                f"append to {self._root}: meta must be a mapping (dict), got {type(meta).__name__}"
            )
        with self._lock:
            self._check_writable()
            key: SeriesKey = ((frame.shape[0], frame.shape[1]), frame.dtype.name, px)
            series = self._by_key.get(key)
            number = len(self._series) if series is None else series.number
            index = len(self._records)
            t = 0 if series is None else series.count
            record = {"index": index, "series": number, "series_index": t, "meta": dict(meta)}
            try:
                line = (dumps_json(record) + "\n").encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise JournalError(
                    f"append to {self._root}: meta is not JSON-serialisable ({exc}); pass only "
                    "str/int/float/bool/None, lists and dicts with str keys (numpy scalars: "
                    ".item(); datetimes: .isoformat(); no NaN/inf)"
                ) from None
            if series is None:
                series = self._write_new_series(number, frame, px, index)
            else:
                self._write_next_frame(series, frame, index)
            self._write_log_line(series, line, index)
            self._records.append(Record(number, t, self._log_end - len(line), len(line)))
            series.count = t + 1
            return index

    def read(self, index: int) -> np.ndarray:
        """The pixels of frame ``index`` (native byte order)."""
        rec = self._record(index)
        return self._series[rec.series].read(rec.series_index)

    def read_meta(self, index: int) -> dict[str, Any]:
        """``{"index", "series", "series_index", "meta"}``: ``meta`` is what was appended."""
        rec = self._record(index)
        path = self._root / LOG_FILE
        try:
            with open(path, "rb") as f:
                f.seek(rec.offset)
                line = f.read(rec.length)
            out: dict[str, Any] = json.loads(line)
        except (OSError, ValueError) as exc:
            raise JournalError(
                f"cannot read the metadata of frame {index} from {path}: {exc}; the log was "
                "changed outside the journal: re-open the journal to re-read it"
            ) from exc
        if out.get("index") != index:
            raise JournalError(
                f"{path} changed under this reader (frame {index} is no longer at byte "
                f"{rec.offset}); re-open the journal with FrameJournal.open(root)"
            )
        return out

    def refresh(self) -> int:
        """Read-only journals: pick up frames the writer appended since; returns ``len(self)``."""
        self._refresh()
        return len(self._records)

    def flush(self) -> None:
        """fsync every file and folder written since the last flush (pixels and metadata)."""
        with self._lock:
            if self._closed or not self._writable:
                return
            try:
                self._fsync_all()
            except OSError as exc:
                raise JournalError(
                    f"cannot fsync the journal in {self._root}: {exc.strerror or exc}; check the "
                    "disk (full, removed, read-only?) before trusting frames since the last flush"
                ) from exc

    def close(self) -> None:
        """Flush (when writable), release the writer lock. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._writable and self._broken is None:
                    self.flush()
            finally:
                self._closed = True
                if self._warmer is not None:
                    self._warmer.close()
                    self._warmer = None
                if self._log_fd is not None:
                    os.close(self._log_fd)
                    self._log_fd = None
                if self._writer_lock is not None:
                    self._writer_lock.release()

    def __repr__(self) -> str:
        mode = "writable" if self._writable else "read-only"
        return (
            f"FrameJournal({str(self._root)!r}, {mode}, frames={len(self._records)}, "
            f"series={len(self._series)})"
        )

    # ----------------------------------------------------------------- writing

    def _check_writable(self) -> None:
        if self._closed:
            raise JournalError(
                f"journal {self._root} is closed; open it again with FrameJournal.open(root)"
            )
        if not self._writable:
            raise JournalError(
                f"journal {self._root} was opened read-only; use "
                "FrameJournal.open(root, writable=True) to append"
            )
        if self._broken is not None:
            raise JournalError(
                f"journal {self._root} could not undo a failed write ({self._broken}); close it "
                "and re-open it with FrameJournal.open(root, writable=True) to recover"
            )

    def _write_fail(self, index: int, path: Path, exc: OSError) -> JournalError:
        return JournalError(
            f"cannot write frame {index} to {path}: {exc.strerror or exc}; free disk space or fix "
            f"the permissions of {self._root}, then append again (earlier frames are intact)"
        )

    def _write_new_series(
        self, number: int, frame: np.ndarray, px: float | None, index: int
    ) -> Series:
        try:
            series = create_series(
                self._root,
                number,
                first=frame,
                pixel_size_um=px,
                compression=self._compression,
                name=self._name,
            )
        except OSError as exc:
            raise self._write_fail(index, self._root / f"s{number}.ome.zarr", exc) from exc
        self._series.append(series)
        try:
            self._write_journal_json()
        except OSError as exc:
            self._series.pop()
            shutil.rmtree(series.store, ignore_errors=True)
            raise self._write_fail(index, self._root / JOURNAL_FILE, exc) from exc
        self._by_key[series.key] = series
        self._dirty.update(series.dirty)
        series.dirty.clear()
        self._warm_next(series, 1, frame.nbytes)
        return series

    def _write_next_frame(self, series: Series, frame: np.ndarray, index: int) -> None:
        t = series.count
        path = series.chunk_str(t)
        data = series.codec.encode(frame)
        nbytes = memoryview(data).nbytes
        warm = self._warmer.take(series.number, t, nbytes) if self._warmer else None
        try:
            series.write_chunk(t, data, warm=warm)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise self._write_fail(index, Path(path), exc) from exc
        try:
            series.set_frames(t + 1)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise self._write_fail(index, Path(series.meta_path), exc) from exc
        self._dirty.add(path)
        self._dirty.add(series.meta_path)
        self._warm_next(series, t + 1, nbytes)

    def _warm_next(self, series: Series, next_t: int, nbytes: int) -> None:
        if self._compression != "none" or not self._prewrite:  # compressed sizes vary
            return
        if self._warmer is None:
            self._warmer = ChunkWarmer(self._root / WARM_FOLDER, depth=self._prewrite)
        self._warmer.want(series.number, next_t, nbytes)

    def _write_log_line(self, series: Series, line: bytes, index: int) -> None:
        assert self._log_fd is not None
        try:
            write_all(self._log_fd, line)
        except OSError as exc:
            self._undo_frame(series)
            raise self._write_fail(index, self._root / LOG_FILE, exc) from exc
        self._log_end += len(line)
        self._dirty.add(self._log_path)

    def _undo_frame(self, series: Series) -> None:
        """Take back steps 1-2 of an append whose log line could not be written."""
        t = series.count
        try:
            assert self._log_fd is not None
            os.ftruncate(self._log_fd, self._log_end)
            if t == 0:  # the series was created for this frame: forget it entirely
                self._series.pop()
                self._by_key.pop(series.key, None)
                self._write_journal_json()
                shutil.rmtree(series.store, ignore_errors=True)
            else:
                series.set_frames(t)
                with contextlib.suppress(OSError):
                    series.chunk(t).unlink()
        except OSError as exc:
            self._broken = f"{exc.strerror or exc}"

    def _write_journal_json(self) -> None:
        path = self._root / JOURNAL_FILE
        atomic_write_bytes(
            path, dumps_journal(self._name, self._compression, self._created, self._series)
        )
        self._dirty.add(str(path))

    def _open_log(self) -> None:
        path = self._root / LOG_FILE
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._log_fd = os.open(path, flags, 0o644)
        self._log_end = os.fstat(self._log_fd).st_size

    def _fsync_all(self) -> None:
        dirs: set[Path] = set()
        for name in sorted(self._dirty):
            path = Path(name)
            if path.exists():
                fsync_path(path)
                # new chunk folders c/t/0 and renamed stores must reach the disk too
                parent = path.parent
                while parent != self._root and parent not in dirs:
                    dirs.add(parent)
                    parent = parent.parent
        dirs.add(self._root)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            if d.exists():
                fsync_dir(d)
        self._dirty.clear()

    # ----------------------------------------------------------------- reading, recovery

    def _record(self, index: int) -> Record:
        if self._closed:
            raise JournalError(
                f"journal {self._root} is closed; open it again with FrameJournal.open(root)"
            )
        if not isinstance(index, int | np.integer) or isinstance(index, bool):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        index = int(index)
        n = len(self._records)
        if not 0 <= index < n:
            n = self.refresh()
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"frame {index} not in journal {self._root} ({n} frames)")
        return self._records[index]

    def _set_series(self, series: list[Series]) -> None:
        self._series = series
        self._by_key = {s.key: s for s in series}

    def _load(self, *, repair: bool = False) -> None:
        """Full scan: series from journal.json, frames from the valid prefix of the log."""
        entries = _read_doc(self._root / JOURNAL_FILE)["series"]
        opts = {"repair": repair, "compression": self._compression, "name": self._name}
        self._set_series([load_series(self._root, e, **opts) for e in entries])
        path = self._root / LOG_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise JournalError(f"cannot read {path}: {exc}; check its permissions") from exc
        records: list[Record] = []
        counts = [0] * len(self._series)
        for offset, line in complete_lines(data, 0):
            rec = parse_record(line)
            if rec is None or not self._fits(rec, len(records), counts, check_shape=True):
                break
            records.append(Record(rec["series"], rec["series_index"], offset, len(line) + 1))
            counts[rec["series"]] += 1
        # pixels must be complete for the last journaled frame of every series
        limits = [self._pixels_present(s, counts[s.number]) for s in self._series]
        cut = next(
            (i for i, r in enumerate(records) if r.series_index >= limits[r.series]), len(records)
        )
        records = records[:cut]
        for s in self._series:
            s.count = 0
        for r in records:
            self._series[r.series].count += 1
        self._records = records
        self._log_end = records[-1].offset + records[-1].length if records else 0

    def _fits(
        self, rec: dict[str, Any], index: int, counts: list[int], *, check_shape: bool
    ) -> bool:
        s = rec["series"]
        if rec["index"] != index or not 0 <= s < len(self._series):
            return False
        if rec["series_index"] != counts[s]:
            return False
        return not check_shape or rec["series_index"] < self._series[s].shape0_on_disk

    def _pixels_present(self, series: Series, count: int) -> int:
        """How many of the first ``count`` frames of ``series`` can be trusted (checks the last)."""
        expected = (
            None if series.codec.compressed else math.prod(series.shape) * series.dtype.itemsize
        )
        while count > 0:
            try:
                size = series.chunk(count - 1).stat().st_size
            except OSError:
                size = -1
            if size > 0 and (expected is None or size == expected):
                return count
            count -= 1
        return 0

    def _refresh(self) -> None:
        """Read-only: append the log lines the writer added since the last look."""
        if self._writable or self._closed:
            return
        with self._lock:
            path = self._root / LOG_FILE
            try:
                size = path.stat().st_size
                if size < self._log_end:  # a writer re-opened and rolled the log back
                    self._load()
                    return
                if size == self._log_end:
                    return
                with open(path, "rb") as f:
                    f.seek(self._log_end)
                    data = f.read(size - self._log_end)
            except OSError as exc:
                raise JournalError(f"cannot read {path}: {exc}; check the journal path") from exc
            counts = [s.count for s in self._series]
            for offset, line in complete_lines(data, self._log_end):
                rec = parse_record(line)
                if rec is not None and rec["series"] >= len(self._series):
                    self._reload_series()
                    counts += [0] * (len(self._series) - len(counts))
                if rec is None or not self._fits(
                    rec, len(self._records), counts, check_shape=False
                ):
                    break
                self._records.append(
                    Record(rec["series"], rec["series_index"], offset, len(line) + 1)
                )
                counts[rec["series"]] += 1
                self._series[rec["series"]].count += 1
                self._log_end = offset + len(line) + 1

    def _reload_series(self) -> None:
        entries = _read_doc(self._root / JOURNAL_FILE)["series"]
        for e in entries[len(self._series) :]:
            s = load_series(self._root, e)
            self._series.append(s)
            self._by_key[s.key] = s

    def _recover(self) -> None:
        """Writable open: make the files on disk match the journaled frames exactly."""
        log = self._root / LOG_FILE
        size = log.stat().st_size if log.exists() else 0
        notes: list[str] = []
        if size > self._log_end:
            with open(log, "rb") as f:
                f.seek(self._log_end)
                tail = f.read()
            with open(self._root / DISCARDED_FILE, "ab") as f:
                f.write(tail)
            os.truncate(log, self._log_end)
            notes.append(f"{size - self._log_end} bytes of {log} moved to {DISCARDED_FILE}")
        while self._series and self._series[-1].count == 0:
            dropped = self._series.pop()
            notes.append(f"unjournaled series store {dropped.store.name} removed")
            self._set_series(self._series)
            self._write_journal_json()
            shutil.rmtree(dropped.store, ignore_errors=True)
        for s in self._series:
            if s.shape0_on_disk != s.count:
                notes.append(
                    f"{s.store.name} rolled back from {s.shape0_on_disk} to {s.count} frames"
                )
                s.set_frames(s.count)
            _remove_chunks_from(s, s.count)
            _remove_partials(s.array_dir)
        _remove_partials(self._root)
        for p in self._root.glob("s*.ome.zarr"):
            if p not in {s.store for s in self._series} and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                notes.append(f"unjournaled series store {p.name} removed")
        if notes:
            warnings.warn(
                f"recovered journal {self._root}: " + "; ".join(notes), RuntimeWarning, stacklevel=3
            )


def _remove_chunks_from(series: Series, count: int) -> None:
    cdir = series.array_dir / "c"
    if not cdir.is_dir():
        return
    for entry in os.scandir(cdir):
        if not entry.name.isdigit() or int(entry.name) >= count:
            shutil.rmtree(entry.path, ignore_errors=True)


def _remove_partials(folder: Path) -> None:
    for p in folder.glob(".*.partial"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JournalError(
            f"cannot read {path}: {exc}; it is written atomically, so the file was damaged or "
            "edited outside the journal: restore it from a backup"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != "scopeflow-frame-journal":
        raise JournalError(f"{path} is not a scopeflow frame journal description; check the path")
    if doc.get("format_version") != 1:
        raise JournalError(
            f"{path} has format_version {doc.get('format_version')!r}; this scopeflow reads "
            "version 1: upgrade scopeflow"
        )
    if not isinstance(doc.get("series"), list):
        raise JournalError(f"{path} has no series list; restore it from a backup")
    return doc


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise JournalError(
            f"append: pixels must be a 2D (y, x) array, got shape {arr.shape}; append one plane "
            "at a time (e.g. np.squeeze(frame) or frame[0])"
        )
    if arr.dtype.kind not in _PIXEL_KINDS:
        raise JournalError(
            f"append: pixel dtype {arr.dtype} is not supported; convert with e.g. "
            "pixels.astype(np.uint16) (bool, int, uint and float dtypes are accepted)"
        )
    if 0 in arr.shape:
        raise JournalError(f"append: pixels are empty (shape {arr.shape}); nothing to journal")
    return arr


def _check_pixel_size(px: float | None) -> float | None:
    if px is None:
        return None
    if isinstance(px, bool) or not isinstance(px, int | float | np.floating | np.integer):
        raise JournalError(f"append: pixel_size_um must be a number or None, got {px!r}")
    value = float(px)
    if not math.isfinite(value) or value <= 0:
        raise JournalError(f"append: pixel_size_um must be a positive finite number, got {px!r}")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
