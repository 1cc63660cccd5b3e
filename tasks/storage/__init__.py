"""Storage: the edge agent's frame journal (OME-Zarr 0.5 series stores + metadata log), stored
images and movies for the batch flows, CTC tracking files, conversion and OMERO."""

from __future__ import annotations

from ._chunked import (
    ChunkLedger,
    SourceImage,
    Tile,
    create_image,
    identity_hash,
    open_image,
    tile_grid,
)
from ._ctc import (
    read_ctc_masks,
    read_ctc_tracks,
    score_ctc,
    write_ctc_ground_truth,
    write_ctc_result,
)
from ._hcs import HcsAcquisition, PlateWriter
from ._image_writer import (
    ImageAxis,
    ImageChannel,
    ImageLayout,
    ImageWriter,
    axes_from_sizes,
    channel_color,
    channels_named,
)
from ._journal import FrameJournal
from ._labels import create_label_image, label_names, label_path
from ._movie import Movie, open_movie
from ._ngff import COMPRESSIONS, Compression
from ._stack import write_zstack
from ._tile_set import TileSetWriter
from .convert import ConversionResult, ConvertOptions, convert_file

__all__ = [
    "COMPRESSIONS",
    "ChunkLedger",
    "Compression",
    "ConversionResult",
    "ConvertOptions",
    "FrameJournal",
    "HcsAcquisition",
    "ImageAxis",
    "ImageChannel",
    "ImageLayout",
    "ImageWriter",
    "Movie",
    "PlateWriter",
    "SourceImage",
    "Tile",
    "TileSetWriter",
    "axes_from_sizes",
    "channel_color",
    "channels_named",
    "convert_file",
    "create_image",
    "create_label_image",
    "identity_hash",
    "label_names",
    "label_path",
    "open_image",
    "open_movie",
    "read_ctc_masks",
    "read_ctc_tracks",
    "score_ctc",
    "tile_grid",
    "write_ctc_ground_truth",
    "write_ctc_result",
    "write_zstack",
]
