"""Queue a finished acquisition for OMERO: one spool request per folder of stores, with the
run's provenance and QC verdicts as map annotations. Writes to the local spool only (an fsync),
so the acquisition never waits for OMERO; ``scopeflow omero drain`` or a running spool delivers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scopeflow import OmeroSettings, load_settings

from ._models import RegistrationRequest
from ._registrar import OmeroRegistrar
from ._spool import OmeroSpool

__all__ = ["acquisition_requests", "queue_acquisition"]

log = logging.getLogger(__name__)


def acquisition_requests(
    stores: Sequence[Path | str],
    *,
    run_id: str,
    project: str,
    dataset: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    qc: Mapping[str, Any] | None = None,
) -> list[RegistrationRequest]:
    """The requests for ``stores``: one per folder holding them (that folder's ``*.ome.zarr``
    images become one OMERO image each). Keys derive from path and run: queuing twice
    registers once."""
    folders: dict[Path, list[Path]] = {}
    for store in stores:
        path = Path(store).resolve()
        folders.setdefault(path.parent, []).append(path)
    metadata: dict[str, Any] = {"provenance": dict(provenance or {})}
    if qc:
        metadata["qc"] = dict(qc)
    requests = []
    for folder, inside in sorted(folders.items()):
        every = {p.resolve() for p in folder.glob("*.ome.zarr")}
        paths = [folder] if every == set(inside) else sorted(inside)
        requests.extend(
            RegistrationRequest(
                path=path,
                project=project,
                dataset=dataset or run_id,
                run_id=run_id,
                metadata=metadata,
            )
            for path in paths
        )
    return requests


def queue_acquisition(
    stores: Sequence[Path | str],
    *,
    run_id: str,
    project: str,
    dataset: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    qc: Mapping[str, Any] | None = None,
    settings: OmeroSettings | None = None,
) -> list[str]:
    """Spool ``stores`` for OMERO; their keys, or [] when no OMERO is configured (no host)."""
    settings = settings or load_settings().omero
    if not settings.host:
        log.info(
            "run %s: not queued for OMERO (no OMERO configured: set SCOPEFLOW_OMERO_HOST)", run_id
        )
        return []
    if not stores:
        return []
    requests = acquisition_requests(
        stores, run_id=run_id, project=project, dataset=dataset, provenance=provenance, qc=qc
    )
    spool = OmeroSpool.from_settings(settings, OmeroRegistrar(settings))
    try:
        return [spool.submit(request) for request in requests]
    finally:
        spool.close()
