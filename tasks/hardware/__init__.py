"""The hardware side: the edge agent (service, drivers, safety envelope) and its clients.

Clients and the envelope import light; the service parts (`EdgeAgent`, `serve_edge`) import
pymmcore-plus and FastAPI only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopeflow import new_command_id

from ._async_client import AsyncEdgeClient
from ._audit import AuditLog
from ._auth import LEGACY_USER, UsersFile
from ._client import EdgeClient
from ._command_scope import CommandScope, command_scope, current_command
from ._device_envelope import DeviceLimits, PumpLimits, StimulatorLimits
from ._dose import DoseLedger, Exposure
from ._envelope import HardwareContext, SafetyEnvelope, load_envelope
from ._filedrop_bridge import FileDropBridge
from ._filedrop_protocol import (
    DROP_PROTOCOL,
    DropCommand,
    DropHello,
    DropLayout,
    DropReply,
    write_atomic,
)
from ._lease_client import AsyncLeaseHold, LeaseHold, current_holder
from ._pattern import pattern_mask
from ._pump_ledger import PumpLedger, PumpUse
from ._pump_timing import check_pump_timing
from ._registry import EdgeAddress, microscope_address
from ._stream_session import Transport
from ._tls import SelfSignedPair, make_self_signed

if TYPE_CHECKING:
    from ._agent import EdgeAgent
    from ._guard import EnvelopeGuard
    from ._openapi import edge_openapi
    from ._process import EdgeProcess
    from ._serve import EdgeServiceOptions, serve_edge

__all__ = [
    "DROP_PROTOCOL",
    "LEGACY_USER",
    "AsyncEdgeClient",
    "AsyncLeaseHold",
    "AuditLog",
    "CommandScope",
    "DeviceLimits",
    "DoseLedger",
    "DropCommand",
    "DropHello",
    "DropLayout",
    "DropReply",
    "EdgeAddress",
    "EdgeAgent",
    "EdgeClient",
    "EdgeProcess",
    "EdgeServiceOptions",
    "EnvelopeGuard",
    "Exposure",
    "FileDropBridge",
    "HardwareContext",
    "LeaseHold",
    "PumpLedger",
    "PumpLimits",
    "PumpUse",
    "SafetyEnvelope",
    "SelfSignedPair",
    "StimulatorLimits",
    "Transport",
    "UsersFile",
    "check_pump_timing",
    "command_scope",
    "current_command",
    "current_holder",
    "edge_openapi",
    "load_envelope",
    "make_self_signed",
    "microscope_address",
    "new_command_id",
    "pattern_mask",
    "serve_edge",
    "write_atomic",
]

_LAZY = {
    "EdgeAgent": "._agent",
    "EnvelopeGuard": "._guard",
    "EdgeProcess": "._process",
    "EdgeServiceOptions": "._serve",
    "edge_openapi": "._openapi",
    "serve_edge": "._serve",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
