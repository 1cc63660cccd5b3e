"""A local stand-in for the part of OMERO's BlitzGateway that `OmeroRegistrar` uses.

Exactly the gateway methods the registrar calls, with BlitzGateway's own signatures (checked
against omero-py in tests/test_omero_fake_server.py), over an in-memory server that keeps its
state between sessions. The objects the registrar builds itself are omero-py's real ones
(``ProjectWrapper``, ``DatasetWrapper``, ``MapAnnotationWrapper``, ``omero.model.*``): they are
saved through the update service here as they would be on a server. Images are this module's
(the registrar reads only their ids, parents, channels and links annotations to them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FakeContainer:
    """A project or dataset as the registrar reads one back (``getId``, ``getParent``)."""

    id: int
    name: str
    parent: FakeContainer | None = None

    def getId(self) -> int:
        return self.id

    def getName(self) -> str:
        return self.name

    def getParent(self) -> FakeContainer | None:
        return self.parent


@dataclass
class FakeLogicalChannel:
    name: str | None = None
    saved: int = 0

    def setName(self, value: str) -> None:
        self.name = value

    def getName(self) -> str | None:
        return self.name

    def save(self) -> None:
        self.saved += 1


@dataclass
class FakeChannel:
    logical: FakeLogicalChannel = field(default_factory=FakeLogicalChannel)

    def getLogicalChannel(self) -> FakeLogicalChannel:
        return self.logical


@dataclass
class FakeImage:
    server: FakeOmeroServer
    id: int
    name: str
    description: str | None
    dataset_id: int
    pixels_id: int
    planes: np.ndarray  # (t, c, z, y, x), what the server stored
    channels: list[FakeChannel]
    annotations: list[tuple[str, list[list[str]]]] = field(default_factory=list)

    def getId(self) -> int:
        return self.id

    def getName(self) -> str:
        return self.name

    def getDescription(self) -> str | None:
        return self.description

    def getParent(self) -> FakeContainer:
        return self.server.container("Dataset", self.dataset_id)

    def getPixelsId(self) -> int:
        return self.pixels_id

    def getChannels(self, noRE: bool = False) -> list[FakeChannel]:
        return self.channels

    def linkAnnotation(self, ann: Any, sameOwner: bool = False) -> Any:
        self.annotations.append((ann.getNs(), [list(pair) for pair in ann.getValue()]))
        return ann

    def map_annotations(self, ns: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for namespace, pairs in self.annotations:
            if namespace == ns:
                merged.update({k: v for k, v in pairs})
        return merged


class FakeOmeroServer:
    """The server's state: projects, datasets, their links, images, pixels sizes, saves."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.objects: dict[int, Any] = {}  # id -> saved omero.model object
        self.dataset_parent: dict[int, int] = {}  # dataset id -> project id
        self.images: dict[int, FakeImage] = {}
        self.pixel_sizes: dict[int, dict[str, float]] = {}
        self.sessions = 0
        self.fail_on_annotation: int | None = None  # the n-th annotation save loses the link

    def next_id(self) -> int:
        return next(self._ids)

    def connect(self, settings: Any) -> FakeBlitzGateway:
        """What `OmeroRegistrar(settings, gateway=server.connect)` opens per session."""
        self.sessions += 1
        return FakeBlitzGateway(self)

    def named(self, kind: str) -> list[tuple[int, str]]:
        import omero

        model = {"Project": omero.model.ProjectI, "Dataset": omero.model.DatasetI}[kind]
        return [
            (oid, obj.getName().val) for oid, obj in self.objects.items() if isinstance(obj, model)
        ]

    def container(self, kind: str, oid: int) -> FakeContainer:
        name = self.objects[oid].getName().val
        if kind == "Dataset":
            parent = self.dataset_parent.get(oid)
            return FakeContainer(oid, name, self.container("Project", parent) if parent else None)
        return FakeContainer(oid, name)


class _UpdateService:
    def __init__(self, server: FakeOmeroServer) -> None:
        self._server = server
        self._annotations = 0

    def saveAndReturnObject(self, obj: Any, ctx: Any = None) -> Any:
        import omero
        from omero.rtypes import rlong

        if isinstance(obj, omero.model.MapAnnotationI):
            self._annotations += 1
            if self._server.fail_on_annotation == self._annotations:
                import Ice

                self._server.fail_on_annotation = None
                raise Ice.ConnectionLostException()  # the link dropped mid-registration
        if obj.getId() is None:
            obj.setId(rlong(self._server.next_id()))
        self._server.objects[obj.getId().val] = obj
        return obj

    def saveObject(self, obj: Any, ctx: Any = None) -> None:
        import omero

        if isinstance(obj, omero.model.ProjectDatasetLinkI):
            self._server.dataset_parent[obj.getChild().getId().val] = obj.getParent().getId().val
        elif isinstance(obj, omero.model.PixelsI):
            sizes = {}
            for axis in ("X", "Y", "Z"):
                size = getattr(obj, f"getPhysicalSize{axis}")()
                if size is not None:
                    sizes[axis.lower()] = size.getValue()
            self._server.pixel_sizes[obj.getId().val] = sizes
        else:
            raise NotImplementedError(f"the fake saves no {type(obj).__name__}")


class _QueryService:
    _PARTIAL = "select i.id from Image i where i.description = :d"

    def __init__(self, server: FakeOmeroServer) -> None:
        self._server = server

    def projection(self, query: str, params: Any, ctx: Any = None) -> list[list[Any]]:
        from omero.rtypes import rlong

        if query != self._PARTIAL:
            raise NotImplementedError(f"the fake answers only {self._PARTIAL!r}, not {query!r}")
        wanted = params.map["d"].val
        return [[rlong(i.id)] for i in self._server.images.values() if i.description == wanted]

    def get(self, kind: str, oid: int, ctx: Any = None) -> Any:
        import omero
        from omero.rtypes import rlong

        if kind != "Pixels":
            raise NotImplementedError(f"the fake gets only Pixels, not {kind}")
        pixels = omero.model.PixelsI()
        pixels.setId(rlong(oid))
        return pixels


class FakeBlitzGateway:
    """One session on the fake server."""

    def __init__(self, server: FakeOmeroServer) -> None:
        from omero.gateway import ServiceOptsDict

        self._server = server
        self.SERVICE_OPTS = ServiceOptsDict()
        self._update = _UpdateService(server)
        self._query = _QueryService(server)
        self.closed = False

    # who and where -------------------------------------------------------------------------

    def getUser(self) -> FakeContainer:
        return FakeContainer(1, "facility")

    def getGroupFromContext(self) -> FakeContainer:
        return FakeContainer(1, "imaging-core")

    def isSecure(self) -> bool:
        return True

    def getUserId(self) -> int:
        return 1

    def close(self, hard: bool = True) -> None:
        self.closed = True

    def getUpdateService(self) -> _UpdateService:
        return self._update

    def getQueryService(self) -> _QueryService:
        return self._query

    # lookups -------------------------------------------------------------------------------

    def getObjects(
        self,
        obj_type: str,
        ids: Any = None,
        params: Any = None,
        attributes: dict[str, Any] | None = None,
        respect_order: bool = False,
        opts: dict[str, Any] | None = None,
    ) -> list[Any]:
        from omero.gateway import DatasetWrapper, ProjectWrapper

        if obj_type not in ("Project", "Dataset") or set(attributes or {}) != {"name"}:
            raise NotImplementedError("the fake looks up projects and datasets by name only")
        wanted = (attributes or {})["name"]
        opts = opts or {}
        found = []
        for oid, name in self._server.named(obj_type):
            if name != wanted:
                continue
            parent = self._server.dataset_parent.get(oid)
            if obj_type == "Dataset" and "project" in opts and parent != opts["project"]:
                continue
            wrapper = ProjectWrapper if obj_type == "Project" else DatasetWrapper
            found.append(wrapper(self, self._server.objects[oid]))
        return found

    def getObjectsByMapAnnotations(
        self,
        obj_type: str,
        key: str | None = None,
        value: str | None = None,
        ns: str | None = None,
        opts: dict[str, Any] | None = None,
    ) -> list[FakeImage]:
        if obj_type != "Image":
            raise NotImplementedError("the fake finds images only")
        return [
            image
            for image in self._server.images.values()
            if any(
                (ns is None or namespace == ns)
                and any(
                    (key is None or k == key) and (value is None or v == value) for k, v in pairs
                )
                for namespace, pairs in image.annotations
            )
        ]

    # changes -------------------------------------------------------------------------------

    def createImageFromNumpySeq(
        self,
        zctPlanes: Any,
        imageName: str,
        sizeZ: int = 1,
        sizeC: int = 1,
        sizeT: int = 1,
        description: str | None = None,
        dataset: Any = None,
        sourceImageId: int | None = None,
        channelList: list[int] | None = None,
    ) -> FakeImage:
        planes = [np.asarray(p) for p in zctPlanes]
        if len(planes) != sizeZ * sizeC * sizeT or len({p.shape for p in planes}) != 1:
            raise ValueError(
                f"{len(planes)} planes of shapes {sorted({p.shape for p in planes})} for "
                f"sizeZ={sizeZ} sizeC={sizeC} sizeT={sizeT}"
            )
        # omero-py takes the planes t fastest, then c, then z
        stack = np.stack(planes).reshape(sizeZ, sizeC, sizeT, *planes[0].shape)
        image = FakeImage(
            server=self._server,
            id=self._server.next_id(),
            name=imageName,
            description=description,
            dataset_id=dataset.getId().val,
            pixels_id=self._server.next_id(),
            planes=stack.transpose(2, 1, 0, 3, 4),
            channels=[FakeChannel() for _ in range(sizeC)],
        )
        self._server.images[image.id] = image
        return image

    def deleteObjects(
        self,
        graph_spec: str,
        obj_ids: list[int],
        deleteAnns: bool = False,
        deleteChildren: bool = False,
        dryRun: bool = False,
        wait: bool = False,
    ) -> None:
        if graph_spec != "Image":
            raise NotImplementedError("the fake deletes images only")
        if not dryRun:
            for oid in obj_ids:
                del self._server.images[oid]
