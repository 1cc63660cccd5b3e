"""Reading a frame journal: the full scan that finds the journaled frames, the incremental
refresh that picks up what a writer appended since, and a frame's metadata line."""

from __future__ import annotations

import json
import math
from typing import Any

from scopeflow import JournalError

from ._journal_layout import JournalState, read_doc
from ._log import Record, RecordTable, complete_lines, parse_record
from ._series import Series, load_series

__all__ = ["load", "read_meta", "refresh"]


def load(state: JournalState, *, repair: bool = False) -> None:
    """Full scan: series from journal.json, frames from the valid prefix of the log."""
    entries = read_doc(state.doc_path)["series"]
    opts = {"repair": repair, "compression": state.compression, "name": state.name}
    state.set_series([load_series(state.root, e, **opts) for e in entries])
    path = state.log_path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise JournalError(f"cannot read {path}: {exc}; check its permissions") from exc
    records = RecordTable()  # the whole log's, while it is checked: 32 bytes a frame
    counts = [0] * len(state.series)
    for offset, line in complete_lines(data, 0):
        rec = parse_record(line)
        if rec is None or not _fits(state, rec, len(records), counts, check_shape=True):
            break
        records.append(Record(rec["series"], rec["series_index"], offset, len(line) + 1))
        counts[rec["series"]] += 1
    # pixels must be complete for the last journaled frame of every series
    limits = [_pixels_present(s, counts[s.number]) for s in state.series]
    cut = next(
        (i for i, r in enumerate(records) if r.series_index >= limits[r.series]), len(records)
    )
    records = records[:cut]
    for s in state.series:
        s.count = 0
    for r in records:
        state.series[r.series].count += 1
    state.records.reset(records)
    state.log_end = records[-1].offset + records[-1].length if len(records) else 0


def refresh(state: JournalState) -> None:
    """Append the log lines a writer added since the last look (for a read-only journal)."""
    path = state.log_path
    try:
        size = path.stat().st_size
        if size < state.log_end:  # a writer re-opened and rolled the log back
            load(state)
            return
        if size == state.log_end:
            return
        with open(path, "rb") as f:
            f.seek(state.log_end)
            data = f.read(size - state.log_end)
    except OSError as exc:
        raise JournalError(f"cannot read {path}: {exc}; check the journal path") from exc
    counts = [s.count for s in state.series]
    for offset, line in complete_lines(data, state.log_end):
        rec = parse_record(line)
        if rec is not None and rec["series"] >= len(state.series):
            _reload_series(state)
            counts += [0] * (len(state.series) - len(counts))
        if rec is None or not _fits(state, rec, len(state.records), counts, check_shape=False):
            break
        state.records.append(Record(rec["series"], rec["series_index"], offset, len(line) + 1))
        counts[rec["series"]] += 1
        state.series[rec["series"]].count += 1
        state.log_end = offset + len(line) + 1


def read_meta(state: JournalState, index: int, rec: Record) -> dict[str, Any]:
    """The log line of frame ``index`` (found at ``rec``), decoded."""
    path = state.log_path
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


def _fits(
    state: JournalState,
    rec: dict[str, Any],
    index: int,
    counts: list[int],
    *,
    check_shape: bool,
) -> bool:
    s = rec["series"]
    if rec["index"] != index or not 0 <= s < len(state.series):
        return False
    if rec["series_index"] != counts[s]:
        return False
    return not check_shape or rec["series_index"] < state.series[s].shape0_on_disk


def _pixels_present(series: Series, count: int) -> int:
    """How many of the first ``count`` frames of ``series`` can be trusted (checks the last)."""
    expected = None if series.codec.compressed else math.prod(series.shape) * series.dtype.itemsize
    while count > 0:
        try:
            size = series.chunk(count - 1).stat().st_size
        except OSError:
            size = -1
        if size > 0 and (expected is None or size == expected):
            return count
        count -= 1
    return 0


def _reload_series(state: JournalState) -> None:
    entries = read_doc(state.doc_path)["series"]
    for e in entries[len(state.series) :]:
        state.add_series(load_series(state.root, e))
