"""Which reader opens which file: a registry keyed by file-name suffix.

An NDTiff dataset is a folder (``NDTiff.index`` and its stack files): it is recognised by that
folder, or by its ``NDTiff.index`` file, before the suffixes are tried.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scopeflow import ConversionError

from ._model import SourceReader

__all__ = ["NDTIFF_INDEX", "SUFFIXES", "is_ndtiff_dataset", "open_source", "register_reader"]

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


def _ndtiff(path: Path) -> SourceReader:
    from ._ndtiff import NdtiffReader

    return NdtiffReader(path)


def _bioio(path: Path) -> SourceReader:
    from ._bioio import BioioReader

    return BioioReader(path)


register_reader((".czi",), _czi)
register_reader((".tif", ".tiff", ".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8"), _tiff)
register_reader((".mrc", ".mrcs", ".map", ".rec", ".st"), _mrc)
register_reader((".nd2", ".lif"), _bioio)

SUFFIXES: tuple[str, ...] = tuple(sorted(_READERS))
NDTIFF_INDEX = "NDTiff.index"


def is_ndtiff_dataset(path: Path) -> bool:
    """``path`` is a folder holding ``NDTiff.index``, or that index file itself."""
    if path.is_dir():
        return (path / NDTIFF_INDEX).is_file()
    return path.name.lower() == NDTIFF_INDEX.lower() and path.is_file()


def open_source(path: Path) -> SourceReader:
    """Open ``path`` with the reader for its suffix (or an NDTiff dataset folder or index);
    ConversionError naming the file if none."""
    if is_ndtiff_dataset(path):
        return _ndtiff(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConversionError(
            f"{path} {problem}; give the path of one microscope file or of an NDTiff dataset "
            f"folder (the folder holding {NDTIFF_INDEX})"
        )
    name = path.name.lower()
    for suffix in sorted(_READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return _READERS[suffix](path)
    raise ConversionError(
        f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; scopeflow converts "
        f"{', '.join(SUFFIXES)} and NDTiff dataset folders -- export the data from the vendor "
        "software as OME-TIFF"
    )
