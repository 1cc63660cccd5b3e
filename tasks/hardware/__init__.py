"""The hardware side: the edge agent (service, drivers, safety envelope) and its clients.

Clients and the envelope import light; the service parts (`EdgeAgent`, `serve_edge`) import
pymmcore-plus and FastAPI only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopeflow import new_command_id

from ._async_client import AsyncEdgeClient
from ._client import EdgeClient
from ._dose import DoseLedger, Exposure
from ._envelope import HardwareContext, SafetyEnvelope, load_envelope
from ._stream_session import Transport

if TYPE_CHECKING:
    from ._agent import EdgeAgent
    from ._guard import EnvelopeGuard
    from ._process import EdgeProcess
    from ._serve import EdgeServiceOptions, serve_edge

__all__ = [
    "AsyncEdgeClient",
    "DoseLedger",
    "EdgeAgent",
    "EdgeClient",
    "EdgeProcess",
    "EdgeServiceOptions",
    "EnvelopeGuard",
    "Exposure",
    "HardwareContext",
    "SafetyEnvelope",
    "Transport",
    "load_envelope",
    "new_command_id",
    "serve_edge",
]

_LAZY = {
    "EdgeAgent": "._agent",
    "EnvelopeGuard": "._guard",
    "EdgeProcess": "._process",
    "EdgeServiceOptions": "._serve",
    "serve_edge": "._serve",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
