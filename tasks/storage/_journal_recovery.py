"""Recovery of a frame journal opened for writing: roll back whatever a crash left half-done.

A frame whose log line is missing was never announced: its pixels, a cut-off last log line,
series stores no line refers to and scratch folders are removed (the cut-off bytes are kept in
``frames.jsonl.discarded``), so that the files on disk match the journaled frames exactly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

from ._journal_layout import DISCARDED_FILE, JournalState
from ._journal_writer import JournalWriter
from ._series import Series

__all__ = ["recover"]


def recover(state: JournalState, writer: JournalWriter) -> None:
    """Make the files on disk match the journaled frames of ``state`` (after a full `load`).

    Warns (RuntimeWarning, at the caller of the caller) with what was rolled back, if anything.
    """
    log = state.log_path
    size = log.stat().st_size if log.exists() else 0
    notes: list[str] = []
    if size > state.log_end:
        with open(log, "rb") as f:
            f.seek(state.log_end)
            tail = f.read()
        with open(state.root / DISCARDED_FILE, "ab") as f:
            f.write(tail)
        os.truncate(log, state.log_end)
        notes.append(f"{size - state.log_end} bytes of {log} moved to {DISCARDED_FILE}")
    while state.series and state.series[-1].count == 0:
        dropped = state.series.pop()
        notes.append(f"unjournaled series store {dropped.store.name} removed")
        state.set_series(state.series)
        writer.write_journal_json()
        shutil.rmtree(dropped.store, ignore_errors=True)
    for s in state.series:
        if s.shape0_on_disk != s.count:
            notes.append(f"{s.store.name} rolled back from {s.shape0_on_disk} to {s.count} frames")
            s.set_frames(s.count)
        _remove_chunks_from(s, s.count)
        _remove_partials(s.array_dir)
    _remove_partials(state.root)
    for p in state.root.glob("s*.ome.zarr"):
        if p not in {s.store for s in state.series} and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"unjournaled series store {p.name} removed")
    if notes:
        warnings.warn(
            f"recovered journal {state.root}: " + "; ".join(notes), RuntimeWarning, stacklevel=3
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
