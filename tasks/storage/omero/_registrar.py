"""OmeroRegistrar: create-or-reuse project/dataset, upload planes, attach key-value annotations.

Route: images are created from their planes with ``BlitzGateway.createImageFromNumpySeq`` (pure
Python: no Java or Bio-Formats on the client, works for any OME-Zarr store scopeflow writes).
The README names the other routes (``omero import`` with Bio-Formats, omero-zarr in-place).

Idempotent by ``request.key``: the key is in each image's description from creation on, and in a
``scopeflow.registration`` map annotation linked after every image of the request is complete.
A request whose key is complete on the server returns those images; a partial one (the process
died mid-upload) is deleted and uploaded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from scopeflow import Closeable, OmeroError, OmeroRejected, OmeroSettings, OmeroUnavailable

from ._annotations import (
    KEY_FIELD,
    NS_ACQUISITION,
    NS_REGISTRATION,
    acquisition_pairs,
    registration_pairs,
)
from ._connection import connect, require_omero, server_name, translate_error
from ._models import RegistrationRequest, RegistrationResult
from ._source import ImageSource, open_image_sources

__all__ = ["OmeroRegistrar"]

log = logging.getLogger(__name__)


class OmeroRegistrar(Closeable):
    """Registers images in one OMERO server; keeps one session open between registrations.

    Satisfies the spool's ``Uploader`` protocol: ``register`` raises :class:`OmeroUnavailable`
    (retry later), :class:`OmeroLoginRefused` (fix credentials, retry later) or
    :class:`OmeroRejected` (this request cannot succeed).
    """

    def __init__(
        self, settings: OmeroSettings, *, gateway: Callable[[OmeroSettings], Any] = connect
    ) -> None:
        """``gateway``: opens the BlitzGateway session (`connect`; tests pass a stand-in)."""
        self._settings = settings
        self._open = gateway
        self._gateway: Any = None

    @property
    def server(self) -> str:
        return server_name(self._settings)

    def __repr__(self) -> str:  # no credentials, ever
        return f"OmeroRegistrar(server={self.server!r}, user={self._settings.username!r})"

    def check(self) -> dict[str, Any]:
        """Connect and log in; who and where we are (raises like :func:`connect`)."""
        gateway = self._connected()
        try:
            user = gateway.getUser()
            group = gateway.getGroupFromContext()
            return {
                "server": self.server,
                "user": user.getName(),
                "group": group.getName(),
                "session_secure": bool(gateway.isSecure()),
            }
        except Exception as exc:
            raise self._translated(exc) from exc

    def register(self, request: RegistrationRequest) -> RegistrationResult:
        """Register ``request`` (or return its earlier registration when its key is complete)."""
        sources = open_image_sources(request.path)  # OmeroRejected before any network traffic
        gateway = self._connected()
        try:
            return self._register(gateway, request, sources)
        except OmeroError:
            raise
        except Exception as exc:
            raise self._translated(exc) from exc

    def close(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            try:
                gateway.close()
            except Exception as exc:  # the session is gone either way
                log.debug("closing the OMERO session failed: %s", type(exc).__name__)

    def _connected(self) -> Any:
        if self._gateway is None:
            self._gateway = self._open(self._settings)
        return self._gateway

    def _translated(self, exc: Exception) -> OmeroError:
        omero = require_omero()
        import Ice

        error = translate_error(exc, self._settings, Ice, omero)
        if isinstance(error, OmeroUnavailable):
            self.close()  # a fresh session next time
        elif type(error) is OmeroError:
            error = OmeroRejected(f"{error}; the request is kept, fix it and retry")
        return error

    def _register(
        self, gateway: Any, request: RegistrationRequest, sources: list[ImageSource]
    ) -> RegistrationResult:
        done = list(
            gateway.getObjectsByMapAnnotations(
                "Image", key=KEY_FIELD, value=request.key, ns=NS_REGISTRATION
            )
        )
        if len(done) == len(sources):
            dataset = done[0].getParent()
            project = dataset.getParent() if dataset is not None else None
            return RegistrationResult(
                key=request.key,
                project_id=project.getId() if project is not None else -1,
                dataset_id=dataset.getId() if dataset is not None else -1,
                image_ids=tuple(sorted(image.getId() for image in done)),
                server=self.server,
                reused=True,
            )
        self._delete_partial(gateway, request.key)
        project = self._project(gateway, request.project)
        dataset = self._dataset(gateway, project, request.dataset)
        images = [
            self._upload(gateway, request, source, dataset, several=len(sources) > 1)
            for source in sources
        ]
        for part, (image, source) in enumerate(zip(images, sources, strict=True)):
            pairs = registration_pairs(request, source, part, len(sources))
            self._annotate(gateway, image, NS_REGISTRATION, pairs)  # last: marks it complete
        return RegistrationResult(
            key=request.key,
            project_id=project.getId(),
            dataset_id=dataset.getId(),
            image_ids=tuple(image.getId() for image in images),
            server=self.server,
        )

    def _upload(
        self,
        gateway: Any,
        request: RegistrationRequest,
        source: ImageSource,
        dataset: Any,
        *,
        several: bool,
    ) -> Any:
        name = request.name or source.name
        if several:
            name = f"{name} {source.path.name}"
        image = gateway.createImageFromNumpySeq(
            source.planes(),
            name,
            sizeZ=source.size("z"),
            sizeC=source.size("c"),
            sizeT=source.size("t"),
            description=_description(request.key),
            dataset=dataset._obj,  # noqa: SLF001 - the gateway wrapper's model object is what the API takes
        )
        _set_pixel_sizes(gateway, image, source)
        for channel, label in zip(image.getChannels(noRE=True), source.channel_names, strict=False):
            logical = channel.getLogicalChannel()
            logical.setName(label)
            logical.save()
        pairs = acquisition_pairs(request.metadata)
        if pairs:
            self._annotate(gateway, image, NS_ACQUISITION, pairs)
        return image

    @staticmethod
    def _annotate(gateway: Any, image: Any, namespace: str, pairs: list[list[str]]) -> None:
        from omero.gateway import MapAnnotationWrapper

        annotation = MapAnnotationWrapper(gateway)
        annotation.setNs(namespace)
        annotation.setValue(pairs)
        annotation.save()
        image.linkAnnotation(annotation)

    @staticmethod
    def _project(gateway: Any, name: str) -> Any:
        import omero
        from omero.gateway import ProjectWrapper

        mine = {"owner": gateway.getUserId()}
        for project in gateway.getObjects("Project", attributes={"name": name}, opts=mine):
            return project
        project = ProjectWrapper(gateway, omero.model.ProjectI())
        project.setName(name)
        project.save()
        return project

    @staticmethod
    def _dataset(gateway: Any, project: Any, name: str) -> Any:
        import omero
        from omero.gateway import DatasetWrapper

        opts = {"owner": gateway.getUserId(), "project": project.getId()}
        for dataset in gateway.getObjects("Dataset", attributes={"name": name}, opts=opts):
            return dataset
        dataset = DatasetWrapper(gateway, omero.model.DatasetI())
        dataset.setName(name)
        dataset.save()
        link = omero.model.ProjectDatasetLinkI()
        link.setParent(omero.model.ProjectI(project.getId(), False))
        link.setChild(omero.model.DatasetI(dataset.getId(), False))
        gateway.getUpdateService().saveObject(link, gateway.SERVICE_OPTS)
        return dataset

    @staticmethod
    def _delete_partial(gateway: Any, key: str) -> None:
        import omero

        params = omero.sys.ParametersI()
        params.addString("d", _description(key))
        rows = gateway.getQueryService().projection(
            "select i.id from Image i where i.description = :d", params, gateway.SERVICE_OPTS
        )
        ids = [row[0].val for row in rows]
        if ids:
            log.warning("deleting %d partial OMERO image(s) of registration %s", len(ids), key)
            gateway.deleteObjects("Image", ids, deleteAnns=True, deleteChildren=True, wait=True)


def _description(key: str) -> str:
    return f"registered by scopeflow, key {key}"


def _set_pixel_sizes(gateway: Any, image: Any, source: ImageSource) -> None:
    if not source.pixel_size_um:
        return
    from omero.model import LengthI
    from omero.model.enums import UnitsLength

    pixels = gateway.getQueryService().get("Pixels", image.getPixelsId(), gateway.SERVICE_OPTS)
    setters = {"x": pixels.setPhysicalSizeX, "y": pixels.setPhysicalSizeY}
    setters["z"] = pixels.setPhysicalSizeZ
    for axis, size in source.pixel_size_um.items():
        setters[axis](LengthI(size, UnitsLength.MICROMETER))
    gateway.getUpdateService().saveObject(pixels, gateway.SERVICE_OPTS)
