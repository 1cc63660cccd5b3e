"""Prefect tasks that register a flow's images in OMERO.

``register_in_omero`` waits for OMERO (use it after a run, where a retry can wait).
``queue_for_omero`` only writes the request to the spool (milliseconds; for use during an
acquisition); ``scopeflow omero drain`` or a process running ``OmeroSpool.start()`` delivers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from scopeflow import OmeroSettings, load_settings

__all__ = ["queue_for_omero", "register_in_omero"]


def _request(
    path: Path, project: str, dataset: str, run_id: str | None, metadata: dict[str, Any] | None
) -> Any:
    from prefect.runtime import flow_run

    from tasks.storage.omero import RegistrationRequest

    return RegistrationRequest(
        path=Path(path).resolve(),
        project=project,
        dataset=dataset,
        run_id=run_id or flow_run.get_id(),
        metadata=metadata or {},
    )


@task(name="register-in-omero", retries=2, retry_delay_seconds=30)
def register_in_omero(
    path: Path,
    *,
    project: str,
    dataset: str,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    settings: OmeroSettings | None = None,
) -> dict[str, Any]:
    """Register the OME-Zarr image(s) at ``path``; returns the OMERO ids.

    ``run_id`` defaults to the current Prefect flow run id. Retries (idempotent by key) when
    OMERO is unavailable.
    """
    from tasks.storage.omero import OmeroRegistrar

    request = _request(path, project, dataset, run_id, metadata)
    with OmeroRegistrar(settings or load_settings().omero) as registrar:
        return registrar.register(request).model_dump(mode="json")


@task(name="queue-for-omero")
def queue_for_omero(
    path: Path,
    *,
    project: str,
    dataset: str,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    settings: OmeroSettings | None = None,
) -> str:
    """Put the registration of ``path`` in the spool (``spill_dir``) and return its key."""
    from tasks.storage.omero import OmeroRegistrar, OmeroSpool

    settings = settings or load_settings().omero
    request = _request(path, project, dataset, run_id, metadata)
    return OmeroSpool.from_settings(settings, OmeroRegistrar(settings)).submit(request)
