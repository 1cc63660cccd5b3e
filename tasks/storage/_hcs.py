"""An OME-Zarr (NGFF 0.5) high-content-screening plate: ``plate/row/column/field``.

The plate group holds the ``plate`` metadata (rows, columns, wells, acquisitions, field
count), each well group its ``well`` metadata (its fields and the acquisition each belongs
to), each field is an ordinary NGFF image written by :func:`write_zstack`. Fields are added
one at a time and the metadata is rewritten atomically after each, so the store is a valid
plate from its first field on (a well appears in the plate once its first field is complete;
NGFF has no empty plate, so the plate's ``zarr.json`` is written with the first field).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import JournalError

from ._fsutil import atomic_write_bytes
from ._stack import write_zstack

__all__ = ["HcsAcquisition", "PlateWriter"]

_NAME = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class HcsAcquisition:
    """One acquisition (a run over the plate) named in the plate metadata; fields say which
    acquisition they belong to."""

    id: int
    name: str
    description: str | None = None


def _group(attributes: Mapping[str, Any] | None = None) -> bytes:
    meta: dict[str, Any] = {"zarr_format": 3, "node_type": "group"}
    meta["attributes"] = dict(attributes or {})
    return json.dumps(meta, indent=2, allow_nan=False).encode()


class PlateWriter:
    """Write an HCS plate field by field.

    ``rows`` and ``columns`` are the plate's row and column names (all of them: the plate's
    shape), e.g. ``A``-``H`` and ``1``-``12``; names must be alphanumeric (NGFF). The writer is
    thread-safe.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        rows: Sequence[str],
        columns: Sequence[str],
        acquisitions: Sequence[HcsAcquisition],
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        for kind, names in (("row", rows), ("column", columns)):
            bad = [n for n in names if not _NAME.match(n)]
            if bad or not names or len(set(names)) != len(names):
                raise ValueError(
                    f"plate {kind} names must be unique and alphanumeric (NGFF); got {list(names)}"
                )
        if not acquisitions or len({a.id for a in acquisitions}) != len(acquisitions):
            raise ValueError("a plate needs at least one acquisition, each with its own id")
        if path.exists():
            raise JournalError(f"{path} exists already; choose a new path or remove it first")
        self.path = path
        self.name = name
        self.rows = list(rows)
        self.columns = list(columns)
        self.acquisitions = list(acquisitions)
        self._attributes = dict(attributes or {})
        self._wells: dict[tuple[str, str], list[dict[str, int | str]]] = {}
        self._started: dict[int, int] = {}
        self._ended: dict[int, int] = {}
        self._lock = threading.Lock()
        path.mkdir(parents=True)

    def add_field(
        self,
        row: str,
        column: str,
        image: np.ndarray,
        *,
        acquisition: int,
        pixel_size_um: float,
        z_step_um: float | None = None,
        channel: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Path:
        """Store ``image`` ((y, x) or (z, y, x)) as the well's next field; returns its path."""
        if row not in self.rows or column not in self.columns:
            raise ValueError(
                f"well {row}{column} is not on this plate (rows {self.rows[0]}-{self.rows[-1]}, "
                f"columns {self.columns[0]}-{self.columns[-1]})"
            )
        if acquisition not in {a.id for a in self.acquisitions}:
            raise ValueError(
                f"acquisition {acquisition} is not one of this plate's "
                f"{[a.id for a in self.acquisitions]}"
            )
        with self._lock:
            images = self._wells.setdefault((row, column), [])
            field = str(len(images))
            well_dir = self.path / row / column
            if not images:
                well_dir.mkdir(parents=True, exist_ok=True)
                row_meta = self.path / row / "zarr.json"
                if not row_meta.exists():
                    atomic_write_bytes(row_meta, _group())
            stored = write_zstack(
                well_dir / field,
                image,
                pixel_size_um=pixel_size_um,
                z_step_um=z_step_um,
                name=f"{row}{column} field {field}",
                channel=channel,
                attributes=attributes,
            )
            images.append({"acquisition": acquisition, "path": field})
            now = int(time.time())  # NGFF: epoch seconds
            self._started.setdefault(acquisition, now)
            self._ended[acquisition] = now
            atomic_write_bytes(
                well_dir / "zarr.json",
                _group({"ome": {"version": "0.5", "well": {"version": "0.5", "images": images}}}),
            )
            self._write_plate()
        return stored

    def fields(self, row: str, column: str) -> list[dict[str, int | str]]:
        """The fields stored in a well so far (path and acquisition of each)."""
        with self._lock:
            return [dict(f) for f in self._wells.get((row, column), [])]

    def _write_plate(self) -> None:
        wells = sorted(
            self._wells, key=lambda rc: (self.rows.index(rc[0]), self.columns.index(rc[1]))
        )
        acquisitions = []
        for a in self.acquisitions:
            entry: dict[str, Any] = {"id": a.id, "name": a.name}
            if a.description:
                entry["description"] = a.description
            counts = [
                sum(1 for f in self._wells[w] if f["acquisition"] == a.id) for w in self._wells
            ]
            if any(counts):
                entry["maximumfieldcount"] = max(counts)
                entry["starttime"] = self._started[a.id]
                entry["endtime"] = self._ended[a.id]
            acquisitions.append(entry)
        if not self._wells:
            return
        plate: dict[str, Any] = {
            "version": "0.5",
            "name": self.name,
            "acquisitions": acquisitions,
            "rows": [{"name": r} for r in self.rows],
            "columns": [{"name": c} for c in self.columns],
            "wells": [
                {
                    "path": f"{r}/{c}",
                    "rowIndex": self.rows.index(r),
                    "columnIndex": self.columns.index(c),
                }
                for r, c in wells
            ],
        }
        plate["field_count"] = max(len(f) for f in self._wells.values())
        attrs = {"ome": {"version": "0.5", "plate": plate}, "scopeflow": self._attributes}
        atomic_write_bytes(self.path / "zarr.json", _group(attrs))
