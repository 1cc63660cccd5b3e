"""Which reader opens which file: a registry keyed by file-name suffix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scopeflow._errors import ConversionError

from ._model import SourceReader

__all__ = ["SUFFIXES", "open_source", "register_reader"]

ReaderFactory = Callable[[Path], SourceReader]
_READERS: dict[str, ReaderFactory] = {}


def register_reader(suffixes: tuple[str, ...], factory: ReaderFactory) -> None:
    """Open files ending in any of ``suffixes`` (lower case, with the dot) with ``factory``."""
    for suffix in suffixes:
        _READERS[suffix] = factory


def _czi(path: Path) -> SourceReader:
    from ._czi import CziReader

    return CziReader(path)


def _tiff(path: Path) -> SourceReader:
    from ._tiff import TiffReader

    return TiffReader(path)


def _mrc(path: Path) -> SourceReader:
    from ._mrc import MrcReader

    return MrcReader(path)


def _bioio(path: Path) -> SourceReader:
    from ._bioio import BioioReader

    return BioioReader(path)


register_reader((".czi",), _czi)
register_reader((".tif", ".tiff", ".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8"), _tiff)
register_reader((".mrc", ".mrcs", ".map", ".rec", ".st"), _mrc)
register_reader((".nd2", ".lif"), _bioio)

SUFFIXES: tuple[str, ...] = tuple(sorted(_READERS))


def open_source(path: Path) -> SourceReader:
    """Open ``path`` with the reader for its suffix; ConversionError naming the file if none."""
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConversionError(f"{path} {problem}; give the path of one microscope file")
    name = path.name.lower()
    for suffix in sorted(_READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return _READERS[suffix](path)
    raise ConversionError(
        f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; scopeflow converts "
        f"{', '.join(SUFFIXES)} -- export the data from the vendor software as OME-TIFF"
    )
