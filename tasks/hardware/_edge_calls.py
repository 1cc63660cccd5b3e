"""What the edge clients say over HTTP, without the I/O: the requests, how answers and refusals
are read, the token and the retry policy. `EdgeClient` and `AsyncEdgeClient` only send them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

import httpx
import useq

from scopeflow import (
    CommandAck,
    CommandStatus,
    ConfigurationError,
    DirectCommand,
    EdgeClientError,
    EdgeRejected,
    EdgeState,
    EdgeUnauthorized,
    EdgeUnavailable,
    ErrorPolicy,
    Frame,
    ScopeflowSettings,
    decode_frame,
    load_settings,
    new_command_id,
)

__all__ = [
    "DEFAULT_EDGE_URL",
    "RETRY_DELAYS_S",
    "TRANSIENT_ERRORS",
    "EdgeAddress",
    "EdgeCall",
    "EdgeClientBase",
    "auth_headers",
    "check_response",
    "command_call",
    "command_status_call",
    "edge_address",
    "event_json",
    "events_call",
    "frame_call",
    "info_call",
    "load_token",
    "rejected",
    "sequence_call",
    "state_call",
    "timed_out",
    "truth_call",
    "unreachable",
]

T = TypeVar("T")

DEFAULT_EDGE_URL = "http://127.0.0.1:8765"
RETRY_DELAYS_S = (0.2, 0.4, 0.8, 1.6)  # waits between the 5 attempts of a request
TRANSIENT_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


def load_token(token: str | None, token_file: Path | None) -> str:
    """``token`` itself, else the content of ``token_file``."""
    if token:
        return token
    if token_file is not None:
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            raise EdgeClientError(f"cannot read the edge token file {token_file}: {exc}") from exc
    raise EdgeClientError(
        "no edge token: pass token=... or token_file=... (the edge's --token-file)"
    )


@dataclass(frozen=True)
class EdgeAddress:
    """Where the edge agent is and the token it wants."""

    url: str
    token: str


def edge_address(settings: ScopeflowSettings | None = None) -> EdgeAddress:
    """The edge URL and token from the settings (``SCOPEFLOW_EDGE_URL``, ``SCOPEFLOW_EDGE_TOKEN``
    or ``SCOPEFLOW_EDGE_TOKEN_FILE``, or the same keys in the TOML file); read now when
    ``settings`` is None."""
    settings = settings or load_settings()
    if not settings.edge_url:
        raise ConfigurationError(
            "no edge URL in the settings: set SCOPEFLOW_EDGE_URL (e.g. http://scope-pc:8765) "
            "or edge_url in scopeflow.toml"
        )
    if settings.edge_token:
        return EdgeAddress(settings.edge_url, settings.edge_token)
    token_file = settings.edge_token_file
    if token_file is None:
        raise ConfigurationError(
            "no edge token in the settings: set SCOPEFLOW_EDGE_TOKEN_FILE to the edge's "
            "--token-file (or SCOPEFLOW_EDGE_TOKEN to the token itself)"
        )
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the edge token file {token_file} named by SCOPEFLOW_EDGE_TOKEN_FILE: "
            f"{exc.strerror or exc}; point it at the edge's --token-file"
        ) from exc
    if not token:
        raise ConfigurationError(
            f"the edge token file {token_file} named by SCOPEFLOW_EDGE_TOKEN_FILE is empty; "
            "point it at the edge's --token-file"
        )
    return EdgeAddress(settings.edge_url, token)


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class EdgeClientBase:
    """What both edge clients start from: the edge's URL and token, given or from the settings."""

    def __init__(self, url: str, *, token: str | None, token_file: Path | None) -> None:
        self.url = url.rstrip("/")
        self._token = load_token(token, token_file)
        self._stream_port: int | None = None
        self._protocol_checked = False  # the edge's /v1/info protocol is this client's

    @classmethod
    def from_settings(
        cls, settings: ScopeflowSettings | None = None, *, timeout: float = 30.0
    ) -> Self:
        """A client of the edge named by the settings: ``SCOPEFLOW_EDGE_URL`` and
        ``SCOPEFLOW_EDGE_TOKEN_FILE`` (or ``SCOPEFLOW_EDGE_TOKEN``); read now when ``settings``
        is None. Raises `ConfigurationError` naming the variable to set when one is missing."""
        address = edge_address(settings)
        return cls(address.url, token=address.token, timeout=timeout)  # type: ignore[call-arg]

    def _http_options(self, timeout: float) -> dict[str, Any]:
        return {"base_url": self.url, "headers": auth_headers(self._token), "timeout": timeout}


@dataclass(frozen=True)
class EdgeCall(Generic[T]):
    """One HTTP request to the edge and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: dict[str, Any] | None = None
    params: dict[str, float] | None = None

    def answer(self, response: httpx.Response) -> T:
        """The parsed answer, or the refusal raised as an `EdgeClientError`."""
        check_response(response)
        return self.parse(response)


def _json(response: httpx.Response) -> Any:
    return response.json()


def _ack(response: httpx.Response) -> CommandAck:
    return CommandAck.model_validate(response.json())


def _state(response: httpx.Response) -> EdgeState:
    return EdgeState.model_validate(response.json())


def _frame(response: httpx.Response) -> Frame:
    return decode_frame(response.content)


def info_call() -> EdgeCall[dict[str, Any]]:
    return EdgeCall("GET", "/v1/info", _json)


def state_call() -> EdgeCall[EdgeState]:
    return EdgeCall("GET", "/v1/state", _state)


def _command_options(tag: str | None, on_error: ErrorPolicy | str | None) -> dict[str, Any]:
    """The optional fields of a submit: left out when not given (an older edge accepts it)."""
    options: dict[str, Any] = {}
    if tag is not None:
        options["tag"] = tag
    if on_error is not None:
        policy = ErrorPolicy.model_validate(on_error)  # a bad policy fails here, not at the edge
        options["on_error"] = policy.model_dump(mode="json")
    return options


def events_call(
    events: Sequence[useq.MDAEvent | dict[str, Any]],
    command_id: str | None,
    tag: str | None = None,
    on_error: ErrorPolicy | str | None = None,
) -> EdgeCall[CommandAck]:
    body = {
        "command_id": command_id or new_command_id("events"),
        "events": [event_json(e) if isinstance(e, useq.MDAEvent) else e for e in events],
        **_command_options(tag, on_error),
    }
    return EdgeCall("POST", "/v1/events", _ack, json=body)


def event_json(event: useq.MDAEvent) -> dict[str, Any]:
    """``event`` as JSON with the fields it sets; an action keeps its ``type`` tag (a default,
    so ``exclude_unset`` would drop it and the edge could not tell the action's kind)."""
    out: dict[str, Any] = event.model_dump(mode="json", exclude_unset=True)
    if "action" in out and event.action is not None:
        out["action"] = event.action.model_dump(mode="json")
    return out


def sequence_call(
    sequence: useq.MDASequence | dict[str, Any],
    command_id: str | None,
    tag: str | None = None,
    on_error: ErrorPolicy | str | None = None,
) -> EdgeCall[CommandAck]:
    seq = (
        sequence.model_dump(mode="json", exclude_unset=True)
        if isinstance(sequence, useq.MDASequence)
        else sequence
    )
    body = {
        "command_id": command_id or new_command_id("sequence"),
        "sequence": seq,
        **_command_options(tag, on_error),
    }
    return EdgeCall("POST", "/v1/sequences", _ack, json=body)


def _command_status(response: httpx.Response) -> CommandStatus:
    return CommandStatus.model_validate(response.json())


def command_status_call(command_id: str) -> EdgeCall[CommandStatus]:
    return EdgeCall("GET", f"/v1/commands/{command_id}", _command_status)


def command_call(command: DirectCommand, command_id: str | None) -> EdgeCall[CommandAck]:
    body = {
        "command_id": command_id or new_command_id(command.type),
        "command": command.model_dump(mode="json"),
    }
    return EdgeCall("POST", "/v1/commands", _ack, json=body)


def truth_call(
    region: tuple[float, float, float, float] | None, t_s: float | None
) -> EdgeCall[dict[str, Any]]:
    params: dict[str, float] = {}
    if region is not None:
        params.update(zip(("x0", "y0", "x1", "y1"), region, strict=True))
    if t_s is not None:
        params["t_s"] = t_s
    return EdgeCall("GET", "/v1/truth", _json, params=params)


def frame_call(index: int) -> EdgeCall[Frame]:
    return EdgeCall("GET", f"/v1/frames/{index}", _frame)


def check_response(response: httpx.Response) -> None:
    """Raise `EdgeUnauthorized` for a 401, `EdgeRejected` for any other HTTP error."""
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if response.status_code == 401:
        raise EdgeUnauthorized(f"edge refused the token: {detail}")
    raise rejected(response.status_code, detail, f"HTTP {response.status_code}")


def rejected(status_code: int, detail: object, status_text: str) -> EdgeRejected:
    """The error for a refused request: ``detail`` is the edge's refusal body (or text)."""
    message = detail.get("message") if isinstance(detail, dict) else detail
    return EdgeRejected(
        f"edge refused the request ({status_text}): {message}",
        status_code=status_code,
        detail=detail,
    )


def unreachable(url: str, exc: Exception) -> EdgeUnavailable:
    return EdgeUnavailable(
        f"edge agent at {url} is unreachable ({exc}); is `scopeflow edge serve` running and is "
        "the URL right?"
    )


def timed_out(url: str, exc: Exception) -> EdgeUnavailable:
    return EdgeUnavailable(f"edge agent at {url} timed out: {exc}")
