"""Writing a frame journal: one ``append`` in crash-safe order, undone when a step fails, and
the fsync of everything written since the last flush.

Write order of one append (each step leaves the journal valid if the process dies after it):

1. the frame's chunk file ``sN.ome.zarr/0/c/t/0/0`` (beyond the array's shape: invisible);
2. the array's ``zarr.json`` with ``shape[0] = t + 1``, replaced atomically (the frame becomes
   visible to zarr readers; for a new series, steps 1-2 happen in a scratch folder that is
   renamed into place, then ``journal.json`` is replaced to list the new store);
3. one line in ``frames.jsonl``: the frame is now journaled.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import JournalError

from ._fsutil import atomic_write_bytes, dumps_json, fsync_dir, fsync_path, write_all
from ._journal_layout import WARM_FOLDER, JournalState
from ._log import Record
from ._series import Series, SeriesKey, create_series
from ._warm import ChunkWarmer

__all__ = ["JournalWriter", "check_pixel_size", "check_pixels"]

_PIXEL_KINDS = "biuf"  # bool, signed/unsigned integers, floats: what zarr v3 and viewers handle


class JournalWriter:
    """Appends frames to the journal described by ``state`` and keeps ``state`` in step.

    ``prewrite``: how many chunk files a background thread keeps written ahead, so that an
    append overwrites cached pages instead of allocating new ones (uncompressed only; 0 off).
    """

    def __init__(self, state: JournalState, *, prewrite: int = 2) -> None:
        self._state = state
        self._prewrite = prewrite
        self._log_fd: int | None = None
        self._dirty: set[str] = set()  # written since the last flush
        # chunks written since the last flush, per series: (first t, last t); a set of their
        # paths would grow by ~200 bytes a frame until the journal is flushed
        self._dirty_chunks: dict[int, tuple[Series, int, int]] = {}
        self._warmer: ChunkWarmer | None = None
        self.broken: str | None = None  # why a failed write could not be undone

    def open_log(self) -> None:
        path = self._state.log_path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._log_fd = os.open(path, flags, 0o644)
        self._state.log_end = os.fstat(self._log_fd).st_size

    def append(self, frame: np.ndarray, px: float | None, meta: Mapping[str, Any]) -> int:
        """Journal one checked frame; return its global index."""
        state = self._state
        key: SeriesKey = ((frame.shape[0], frame.shape[1]), frame.dtype.name, px)
        series = state.by_key.get(key)
        number = len(state.series) if series is None else series.number
        index = len(state.records)
        t = 0 if series is None else series.count
        record = {"index": index, "series": number, "series_index": t, "meta": dict(meta)}
        try:
            line = (dumps_json(record) + "\n").encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"append to {state.root}: meta is not JSON-serialisable ({exc}); pass only "
                "str/int/float/bool/None, lists and dicts with str keys (numpy scalars: "
                ".item(); datetimes: .isoformat(); no NaN/inf)"
            ) from None
        if series is None:
            series = self._write_new_series(number, frame, px, index)
        else:
            self._write_next_frame(series, frame, index)
        self._write_log_line(series, line, index)
        state.records.append(Record(number, t, state.log_end - len(line), len(line)))
        series.count = t + 1
        return index

    def write_journal_json(self) -> None:
        path = self._state.doc_path
        atomic_write_bytes(path, self._state.journal_json())
        self._dirty.add(str(path))

    def fsync_all(self) -> None:
        """fsync every file and folder written since the last call (raises OSError)."""
        root = self._state.root
        dirs: set[Path] = set()
        for series, first, last in self._dirty_chunks.values():
            self._dirty.update(series.chunk_str(t) for t in range(first, last + 1))
        for name in sorted(self._dirty):
            path = Path(name)
            if path.exists():
                fsync_path(path)
                # new chunk folders c/t/0 and renamed stores must reach the disk too
                parent = path.parent
                while parent != root and parent not in dirs:
                    dirs.add(parent)
                    parent = parent.parent
        dirs.add(root)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            if d.exists():
                fsync_dir(d)
        self._dirty.clear()
        self._dirty_chunks.clear()

    def close(self) -> None:
        """Stop the pre-writer and close the log (no flush: call `fsync_all` first)."""
        if self._warmer is not None:
            self._warmer.close()
            self._warmer = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    # ----------------------------------------------------------------- the steps of an append

    def _write_fail(self, index: int, path: Path, exc: OSError) -> JournalError:
        return JournalError(
            f"cannot write frame {index} to {path}: {exc.strerror or exc}; free disk space or fix "
            f"the permissions of {self._state.root}, then append again (earlier frames are intact)"
        )

    def _write_new_series(
        self, number: int, frame: np.ndarray, px: float | None, index: int
    ) -> Series:
        state = self._state
        try:
            series = create_series(
                state.root,
                number,
                first=frame,
                pixel_size_um=px,
                compression=state.compression,
                name=state.name,
            )
        except OSError as exc:
            raise self._write_fail(index, state.root / f"s{number}.ome.zarr", exc) from exc
        state.series.append(series)
        try:
            self.write_journal_json()
        except OSError as exc:
            state.series.pop()
            shutil.rmtree(series.store, ignore_errors=True)
            raise self._write_fail(index, state.doc_path, exc) from exc
        state.by_key[series.key] = series
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
        first = self._dirty_chunks.get(series.number, (series, t, t))[1]
        self._dirty_chunks[series.number] = (series, first, t)
        self._dirty.add(series.meta_path)
        self._warm_next(series, t + 1, nbytes)

    def _warm_next(self, series: Series, next_t: int, nbytes: int) -> None:
        if self._state.compression != "none" or not self._prewrite:  # compressed sizes vary
            return
        if self._warmer is None:
            self._warmer = ChunkWarmer(self._state.root / WARM_FOLDER, depth=self._prewrite)
        self._warmer.want(series.number, next_t, nbytes)

    def _write_log_line(self, series: Series, line: bytes, index: int) -> None:
        assert self._log_fd is not None
        try:
            write_all(self._log_fd, line)
        except OSError as exc:
            self._undo_frame(series)
            raise self._write_fail(index, self._state.log_path, exc) from exc
        self._state.log_end += len(line)
        self._dirty.add(str(self._state.log_path))

    def _undo_frame(self, series: Series) -> None:
        """Take back steps 1-2 of an append whose log line could not be written."""
        state = self._state
        t = series.count
        try:
            assert self._log_fd is not None
            os.ftruncate(self._log_fd, state.log_end)
            if t == 0:  # the series was created for this frame: forget it entirely
                state.series.pop()
                state.by_key.pop(series.key, None)
                self.write_journal_json()
                shutil.rmtree(series.store, ignore_errors=True)
            else:
                series.set_frames(t)
                with contextlib.suppress(OSError):
                    series.chunk(t).unlink()
        except OSError as exc:
            self.broken = f"{exc.strerror or exc}"


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as an array the journal can store: one non-empty 2D plane of numbers."""
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


def check_pixel_size(px: float | None) -> float | None:
    """``px`` as a positive finite float, or None."""
    if px is None:
        return None
    if isinstance(px, bool) or not isinstance(px, int | float | np.floating | np.integer):
        raise JournalError(f"append: pixel_size_um must be a number or None, got {px!r}")
    value = float(px)
    if not math.isfinite(value) or value <= 0:
        raise JournalError(f"append: pixel_size_um must be a positive finite number, got {px!r}")
    return value
