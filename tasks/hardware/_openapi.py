"""The edge's OpenAPI document without a microscope: the app built around a stand-in that only
answers what the routes read while they are being declared."""

from __future__ import annotations

from typing import Any

__all__ = ["edge_openapi"]


class _SchemaOnly:
    simulated = True  # declare the simulation routes too (served by simulated edges only)

    def __init__(self) -> None:
        from scopeflow import EdgeServerSettings

        self.settings = EdgeServerSettings()  # the default limits (body size) the app installs


def edge_openapi() -> dict[str, Any]:
    """What ``GET /openapi.json`` of an edge answers (simulated edges add ``/v1/sim/faults``)."""
    from ._app import create_app

    return create_app(_SchemaOnly(), "-", stream_port=None).openapi()  # type: ignore[arg-type]
