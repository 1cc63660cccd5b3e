"""How the edge refuses a command, the same on every path: the HTTP API (an exception handler)
and the command channel (an answer line) both turn an edge-side error into a status code and a
`Refusal` body with `refusal_for`."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from scopeflow import (
    ChannelAnswer,
    CommandAck,
    CommandConflict,
    CommandRequest,
    EnvelopeViolation,
    HardwareError,
    InvalidRequest,
    Refusal,
)

from ._limits import json_safe

__all__ = ["REFUSED_ERRORS", "answer_command", "refusal_for"]

REFUSED_ERRORS: tuple[type[Exception], ...] = (
    EnvelopeViolation,
    InvalidRequest,
    CommandConflict,
    HardwareError,
)
"""The errors `refusal_for` turns into a refusal; any other error is a bug (HTTP 500)."""


def refusal_for(exc: Exception) -> tuple[int, Refusal] | None:
    """The HTTP status and refusal body for an edge-side error, or None if it is unexpected."""
    if isinstance(exc, EnvelopeViolation):
        return 422, Refusal(
            error="envelope_violation",
            message=str(exc),
            limit=exc.limit,
            value=json_safe(exc.value),
        )
    if isinstance(exc, InvalidRequest):
        return 422, Refusal(
            error="invalid_command", message=str(exc), limit=exc.limit, value=json_safe(exc.value)
        )
    if isinstance(exc, CommandConflict):
        return 409, Refusal(error="conflict", message=str(exc))
    if isinstance(exc, HardwareError):
        return 503, Refusal(error="hardware_error", message=str(exc))
    return None


def answer_command(run: Callable[[CommandRequest], CommandAck], line: bytes) -> ChannelAnswer:
    """Validate one command-channel line, run it, and return the answer (never raises for a
    refused or malformed command: the refusal is the answer)."""
    try:
        request = CommandRequest.model_validate_json(line)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        refusal = Refusal(
            error="invalid_command",
            message=f"not a command request ({problems}); send "
            '{"command_id": "...", "command": {"type": "move_stage", ...}} as one JSON line',
        )
        return ChannelAnswer(ok=False, status=422, detail=refusal)
    try:
        ack = run(request)
    except Exception as exc:
        known = refusal_for(exc)
        if known is None:
            raise
        status, refusal = known
        return ChannelAnswer(ok=False, status=status, detail=refusal)
    return ChannelAnswer(ok=True, ack=ack)
