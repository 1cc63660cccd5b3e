"""Register images in OMERO: directly (:class:`OmeroRegistrar`) or through a spill-and-drain spool
(:class:`OmeroSpool`) that never makes the acquisition wait and loses nothing while OMERO is down.

Needs the ``omero`` extra (omero-py) only to talk to a server; the models, the OME-Zarr reader and
the spool import without it.
"""

from __future__ import annotations

from ._acquisition import acquisition_requests, queue_acquisition
from ._annotations import NS_ACQUISITION, NS_REGISTRATION, acquisition_pairs
from ._connection import connect, require_omero
from ._models import RegistrationRequest, RegistrationResult
from ._registrar import OmeroRegistrar
from ._source import ImageSource, open_image_sources
from ._spool import OmeroSpool, SpoolStats, Uploader

__all__ = [
    "NS_ACQUISITION",
    "NS_REGISTRATION",
    "ImageSource",
    "OmeroRegistrar",
    "OmeroSpool",
    "RegistrationRequest",
    "RegistrationResult",
    "SpoolStats",
    "Uploader",
    "acquisition_pairs",
    "acquisition_requests",
    "connect",
    "open_image_sources",
    "queue_acquisition",
    "require_omero",
]
