"""A series: the frames of one (shape, dtype, pixel size), stored as one OME-Zarr image."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import JournalError

from ._fsutil import atomic_write_bytes, dumps_json, replace_file, write_all, write_file
from ._ngff import ChunkCodec, Compression, array_metadata_template, chunk_path, group_metadata

__all__ = ["UNKNOWN_FRAMES", "Series", "SeriesKey", "create_series", "dumps_journal", "load_series"]

SeriesKey = tuple[tuple[int, int], str, float | None]
UNKNOWN_FRAMES = sys.maxsize  # shape0_on_disk when the array metadata had to be rebuilt


@dataclass
class Series:
    """In-memory state of one series store; ``count`` is the number of frames journaled."""

    number: int
    store: Path
    shape: tuple[int, int]
    dtype: np.dtype
    pixel_size_um: float | None
    array_meta: dict[str, Any]
    codec: ChunkCodec
    count: int = 0
    shape0_on_disk: int = 0
    dirty: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.relocate(self.store)

    def relocate(self, store: Path) -> None:
        """Point at ``store`` (after the scratch folder was renamed); precompute hot paths."""
        self.store = store
        array = os.path.join(store, "0")
        self._chunks = os.path.join(array, "c")
        self.meta_path = os.path.join(array, "zarr.json")
        self._meta_tmp = os.path.join(array, ".zarr.json.partial")
        # the array metadata as text with a hole for shape[0]: one string join per append
        # instead of a pure-python indented json.dumps
        hole = -987654321987
        meta = {**self.array_meta, "shape": [hole, *self.array_meta["shape"][1:]]}
        self._meta_head, self._meta_tail = _json_bytes(meta).decode().split(str(hole))

    @property
    def key(self) -> SeriesKey:
        return (self.shape, self.dtype.name, self.pixel_size_um)

    @property
    def array_dir(self) -> Path:
        return self.store / "0"

    def chunk(self, t: int) -> Path:
        return chunk_path(self.array_dir, t)

    def chunk_str(self, t: int) -> str:
        return os.path.join(self._chunks, str(t), "0", "0")

    def describe(self) -> dict[str, Any]:
        """This series' entry in ``journal.json``."""
        return {
            "series": self.number,
            "store": self.store.name,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "pixel_size_um": self.pixel_size_um,
        }

    def write_chunk(self, t: int, data: memoryview | bytes, *, warm: str | None = None) -> str:
        """Write frame ``t``'s chunk file; return its path.

        ``warm``: a pre-written file of the same size to overwrite and move into place.
        """
        outer = os.path.join(self._chunks, str(t))
        inner = os.path.join(outer, "0")
        try:  # c/ exists from frame 0 on: two mkdirs instead of pathlib's three
            os.mkdir(outer)
            os.mkdir(inner)
        except (FileExistsError, FileNotFoundError):
            os.makedirs(inner, exist_ok=True)
        path = os.path.join(inner, "0")
        if warm is None:
            write_file(path, data)
            return path
        try:
            fd = os.open(warm, os.O_WRONLY)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(warm, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(warm)
            raise
        return path

    def set_frames(self, n: int) -> None:
        """Atomically rewrite the array metadata with ``shape[0] = n``."""
        replace_file(
            self._meta_tmp, self.meta_path, f"{self._meta_head}{n}{self._meta_tail}".encode()
        )
        self.shape0_on_disk = n
        self.array_meta["shape"][0] = n

    def read(self, t: int) -> np.ndarray:
        path = self.chunk(t)
        try:
            data = path.read_bytes()
            return self.codec.decode(data, self.shape)
        except FileNotFoundError:
            raise JournalError(
                f"frame {t} of series {self.number} has no pixels at {path}: the store was changed "
                "outside the journal; restore it from a copy or re-open the journal writable to "
                "roll back to a consistent state"
            ) from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise JournalError(
                f"cannot read frame {t} of series {self.number} from {path}: {exc}; check the file "
                "is readable and not truncated"
            ) from exc


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def create_series(
    root: Path,
    number: int,
    *,
    first: np.ndarray,
    pixel_size_um: float | None,
    compression: Compression,
    name: str,
) -> Series:
    """Build a complete store (metadata + frame 0) in a scratch folder, then rename it in place.

    Readers never see a half-made store: either ``root/sN.ome.zarr`` is absent or it is valid
    with exactly one frame.
    """
    store = root / f"s{number}.ome.zarr"
    if store.exists():  # left by a crash before journal.json listed it: never journaled
        shutil.rmtree(store)
    scratch = root / f".{store.name}.{uuid.uuid4().hex}.partial"
    shape = (int(first.shape[0]), int(first.shape[1]))
    dtype = first.dtype.newbyteorder("=")
    try:
        scratch.mkdir()
        (scratch / "zarr.json").write_bytes(
            _json_bytes(group_metadata(f"{name} s{number}", pixel_size_um))
        )
        meta = array_metadata_template(scratch / "0", shape, dtype, compression)
        series = Series(
            number=number,
            store=scratch,
            shape=shape,
            dtype=dtype,
            pixel_size_um=pixel_size_um,
            array_meta=meta,
            codec=ChunkCodec(meta["codecs"], dtype, scratch),
            shape0_on_disk=1,
        )
        series.write_chunk(0, series.codec.encode(first))
        os.replace(scratch, store)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    series.relocate(store)
    series.dirty.update({str(store / "zarr.json"), series.meta_path, series.chunk_str(0)})
    return series


def load_series(
    root: Path,
    entry: dict[str, Any],
    *,
    repair: bool = False,
    compression: Compression = "none",
    name: str = "scopeflow journal",
) -> Series:
    """Rebuild a series from its ``journal.json`` entry and its array metadata on disk.

    ``repair`` (writable open only): metadata files that cannot be parsed (zero-filled after a
    power cut without fsync) are rewritten from the entry; ``shape0_on_disk`` is then
    ``UNKNOWN_FRAMES`` so that recovery writes the journaled frame count.
    """
    try:
        number = int(entry["series"])
        store = root / str(entry["store"])
        shape = (int(entry["shape"][0]), int(entry["shape"][1]))
        dtype = np.dtype(str(entry["dtype"]))
        px = entry.get("pixel_size_um")
        pixel_size_um = None if px is None else float(px)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise JournalError(
            f"{root / 'journal.json'}: malformed series entry {entry!r} ({exc}); the file was "
            "edited by hand or by another tool: restore it from a backup"
        ) from exc
    meta_path = store / "0" / "zarr.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shape0 = int(meta["shape"][0])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        if not repair or not store.is_dir():
            raise JournalError(
                f"cannot read the array metadata {meta_path} of series {number}: {exc}; "
                "re-open the journal with FrameJournal.open(root, writable=True) to rebuild it, "
                "or restore the store from a copy"
            ) from exc
        meta, shape0 = _rebuilt_array_meta(root, shape, dtype, compression), UNKNOWN_FRAMES
    if repair:
        group_path = store / "zarr.json"
        try:
            json.loads(group_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            group = group_metadata(f"{name} s{number}", pixel_size_um)
            atomic_write_bytes(group_path, _json_bytes(group))
    return Series(
        number=number,
        store=store,
        shape=shape,
        dtype=dtype,
        pixel_size_um=pixel_size_um,
        array_meta=meta,
        codec=ChunkCodec(meta.get("codecs", []), dtype, meta_path),
        shape0_on_disk=shape0,
    )


def _rebuilt_array_meta(
    root: Path, shape: tuple[int, int], dtype: np.dtype, compression: Compression
) -> dict[str, Any]:
    scratch = root / f".rebuild.{uuid.uuid4().hex}.partial"
    try:
        return array_metadata_template(scratch, shape, dtype, compression)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def dumps_journal(name: str, compression: str, created: str, series: list[Series]) -> bytes:
    """The ``journal.json`` describing the whole journal."""
    doc = {
        "format": "scopeflow-frame-journal",
        "format_version": 1,
        "name": name,
        "compression": compression,
        "created": created,
        "metadata_log": "frames.jsonl",
        "series": [s.describe() for s in series],
    }
    return (dumps_json(doc) + "\n").encode("utf-8")
