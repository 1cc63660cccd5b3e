"""Artifacts on the session's Prefect server, asked for by key."""

from __future__ import annotations

from collections.abc import Collection


def artifact_keys_on_server(keys: Collection[str]) -> set[str]:
    """Which of ``keys`` the server holds. Asked by key: an unfiltered read returns one page
    of artifacts, which a whole test session's runs outgrow."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys)))
        )
    return {a.key for a in found if a.key}
