"""The frame journal's folder layout and the state its writer, reader and recovery share.

A journal folder holds ``journal.json`` (name, compression, the series stores), one OME-Zarr
store per series (``s0.ome.zarr``, ``s1.ome.zarr``, ...) and ``frames.jsonl``, one metadata line
per journaled frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scopeflow import JournalError

from ._frame_index import FrameIndex
from ._ngff import Compression
from ._series import Series, SeriesKey, dumps_journal

__all__ = [
    "DISCARDED_FILE",
    "JOURNAL_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "WARM_FOLDER",
    "JournalState",
    "now",
    "read_doc",
]

JOURNAL_FILE = "journal.json"
LOG_FILE = "frames.jsonl"
LOCK_FILE = ".writer.lock"
WARM_FOLDER = ".warm.partial"  # pre-written chunk files; removed with the other partials
DISCARDED_FILE = "frames.jsonl.discarded"


@dataclass
class JournalState:
    """What an open journal knows: its description, its series and every journaled frame.

    ``records[i]`` locates frame ``i`` (the recent ones from memory, older ones from the log);
    ``log_end`` is the byte in ``frames.jsonl`` after the last journaled line.
    """

    root: Path
    name: str
    compression: Compression
    created: str
    series: list[Series] = field(default_factory=list)
    by_key: dict[SeriesKey, Series] = field(default_factory=dict)
    records: FrameIndex = field(init=False)
    log_end: int = 0

    def __post_init__(self) -> None:
        self.records = FrameIndex(self.root / LOG_FILE)  # FrameJournal gives its window

    @classmethod
    def from_doc(cls, root: Path, doc: dict[str, Any]) -> JournalState:
        return cls(
            root=root,
            name=str(doc.get("name", "scopeflow journal")),
            compression=doc.get("compression", "none"),
            created=str(doc.get("created", "")),
        )

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    @property
    def doc_path(self) -> Path:
        return self.root / JOURNAL_FILE

    def set_series(self, series: list[Series]) -> None:
        self.series = series
        self.by_key = {s.key: s for s in series}

    def add_series(self, series: Series) -> None:
        self.series.append(series)
        self.by_key[series.key] = series

    def journal_json(self) -> bytes:
        """The content of ``journal.json`` for the series known now."""
        return dumps_journal(self.name, self.compression, self.created, self.series)


def read_doc(path: Path) -> dict[str, Any]:
    """``journal.json``, checked to be a version-1 frame journal description."""
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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
