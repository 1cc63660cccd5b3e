"""When a file in a watched folder is complete, per vendor.

Microscope PCs write in different ways: ZEISS SmartSEM/Atlas write a TIFF tile in place (its
size grows, then stops), Thermo Fisher EPU writes an MRC and then its XML sidecar, other
software writes elsewhere and renames. A rule says which sign to wait for:

- ``size_stable``: size and mtime unchanged for ``stable_s`` (works on network shares);
- ``sidecar``: a file with the same stem and ``sidecar_suffix`` exists;
- ``closed``: no process on this host holds the file open (Linux ``/proc``; a writer on another
  host of a network share is invisible to it, so use ``size_stable`` there).

With ``check_structure`` the file must also parse as complete (a TIFF's every strip or tile
within the file, an MRC's header-declared data within the file). A file whose size stays put
for ``give_up_s`` without becoming complete is handed on anyway, so its QC verdict says it is
truncated instead of the watcher waiting for ever.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["VENDOR_PROFILES", "CompletionRule", "VendorProfile", "structure_complete"]


class CompletionRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["size_stable", "sidecar", "closed"] = "size_stable"
    stable_s: float = Field(0.5, ge=0.0, description="size/mtime unchanged this long")
    sidecar_suffix: str = Field(".xml", description="for kind='sidecar': the sidecar's suffix")
    check_structure: bool = True
    give_up_s: float = Field(
        30.0, gt=0.0, description="unchanged this long but incomplete: handed on as corrupt"
    )


class VendorProfile(BaseModel):
    """Which files of a folder are images (``patterns``, fnmatch on the name) and when each
    is complete."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    patterns: tuple[str, ...]
    rule: CompletionRule = CompletionRule()


VENDOR_PROFILES: dict[str, VendorProfile] = {
    "zeiss-sem": VendorProfile(
        name="zeiss-sem", patterns=("*.tif", "*.tiff"), rule=CompletionRule(stable_s=0.5)
    ),
    "thermo-tiff": VendorProfile(
        name="thermo-tiff", patterns=("*.tif", "*.tiff"), rule=CompletionRule(stable_s=0.5)
    ),
    "thermo-mrc": VendorProfile(
        name="thermo-mrc",
        patterns=("*.mrc",),
        rule=CompletionRule(kind="sidecar", sidecar_suffix=".xml"),
    ),
    "ome-tiff": VendorProfile(
        name="ome-tiff", patterns=("*.ome.tif", "*.ome.tiff"), rule=CompletionRule(stable_s=0.5)
    ),
    "any": VendorProfile(
        name="any",
        patterns=("*.tif", "*.tiff", "*.mrc", "*.czi", "*.ome.tif", "*.ome.tiff"),
    ),
}


def structure_complete(path: Path, size: int) -> str | None:
    """None when the file parses as complete at ``size`` bytes, else why not."""
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        return _tiff_complete(path, size)
    if name.endswith(".mrc"):
        return _mrc_complete(path, size)
    return None


def _tiff_complete(path: Path, size: int) -> str | None:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            if not tif.pages:
                return "no image in the TIFF yet"
            for page in tif.pages:
                offsets = getattr(page, "dataoffsets", ())
                counts = getattr(page, "databytecounts", ())
                for offset, count in zip(offsets, counts, strict=False):
                    if offset + count > size:
                        return f"image data ends at byte {offset + count}, the file has {size}"
    except Exception as exc:  # tifffile raises many kinds for a file cut anywhere
        return f"not a complete TIFF yet ({type(exc).__name__}: {exc})"
    return None


def _mrc_complete(path: Path, size: int) -> str | None:
    try:
        with path.open("rb") as fh:
            header = fh.read(1024)
    except OSError as exc:
        return str(exc)
    if len(header) < 1024:
        return "MRC header incomplete"
    nx, ny, nz, mode = struct.unpack("<4i", header[:16])
    nsymbt = struct.unpack("<i", header[92:96])[0]
    bytes_per = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}.get(mode)
    if bytes_per is None or min(nx, ny, nz) <= 0:
        return f"MRC header not valid (mode {mode}, size {nx}x{ny}x{nz})"
    need = 1024 + max(0, nsymbt) + nx * ny * nz * bytes_per
    return None if size >= need else f"MRC data ends at byte {need}, the file has {size}"


def open_on_this_host(path: Path) -> bool:
    """True when any process we can see holds ``path`` open (Linux ``/proc``)."""
    target = os.path.realpath(path)
    proc = Path("/proc")
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(proc / pid / "fd" / fd) == target:
                    return True
            except OSError:
                continue
    return False
