"""Vendor microscopy files (CZI, OME-TIFF, SEM/TEM TIFF, MRC, NDTiff; ND2/LIF) to OME-Zarr 0.5."""

from __future__ import annotations

from ._convert import ConversionResult, ConvertOptions, convert_file
from ._formats import SUFFIXES, open_source, register_reader
from ._model import ChannelInfo, OriginalMetadata, PhysicalSize, PlaneInfo, SceneInfo, SourceReader
from ._ndtiff import dataset_folder as ndtiff_dataset_folder
from ._tile_read import TileImage, read_tile
from ._writer import ImageWriter, chunk_shape

__all__ = [
    "SUFFIXES",
    "ChannelInfo",
    "ConversionResult",
    "ConvertOptions",
    "ImageWriter",
    "OriginalMetadata",
    "PhysicalSize",
    "PlaneInfo",
    "SceneInfo",
    "SourceReader",
    "TileImage",
    "chunk_shape",
    "convert_file",
    "ndtiff_dataset_folder",
    "open_source",
    "read_tile",
    "register_reader",
]
