"""Storage for the edge agent: the frame journal (OME-Zarr 0.5 series stores + metadata log)."""

from __future__ import annotations

from ._journal import FrameJournal
from ._ngff import COMPRESSIONS, Compression
from ._stack import write_zstack

__all__ = ["COMPRESSIONS", "Compression", "FrameJournal", "write_zstack"]
