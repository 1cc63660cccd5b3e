"""scopeflow: smart-microscopy workflows.

The core shared by every role: wire protocol, settings, errors.
"""

from __future__ import annotations

from ._errors import (
    CommandConflict,
    ConfigurationError,
    EdgeClientError,
    EdgeRejected,
    EdgeUnauthorized,
    EdgeUnavailable,
    EnvelopeViolation,
    HardwareError,
    JournalError,
    MicroManagerNotInstalled,
    ScopeflowError,
)
from ._framing import Frame
from ._protocol import PROTOCOL_VERSION, CommandAck, EdgeState, FrameHeader, StagePosition
from ._settings import EdgeServerSettings, ScopeflowSettings, load_settings

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "CommandAck",
    "CommandConflict",
    "ConfigurationError",
    "EdgeClientError",
    "EdgeRejected",
    "EdgeServerSettings",
    "EdgeState",
    "EdgeUnauthorized",
    "EdgeUnavailable",
    "EnvelopeViolation",
    "Frame",
    "FrameHeader",
    "HardwareError",
    "JournalError",
    "MicroManagerNotInstalled",
    "ScopeflowError",
    "ScopeflowSettings",
    "StagePosition",
    "load_settings",
]
