"""What the edge clients say over HTTP, without the I/O: the requests, how answers and refusals
are read, the token and the retry policy. `EdgeClient` and `AsyncEdgeClient` only send them.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import useq

from scopeflow import (
    LEASE_HEADER,
    CommandAck,
    CommandStatus,
    ConfigurationError,
    DirectCommand,
    EdgeCertificateError,
    EdgeClientError,
    EdgeForbidden,
    EdgeRejected,
    EdgeState,
    EdgeUnauthorized,
    EdgeUnavailable,
    ErrorPolicy,
    Frame,
    LeaseInfo,
    MicroscopeLeased,
    ScopeflowSettings,
    WhoAmI,
    decode_frame,
    load_settings,
    new_command_id,
)

from ._lease_client import current_holder
from ._registry import EdgeAddress, microscope_address
from ._tls import client_context

__all__ = [
    "DEFAULT_EDGE_URL",
    "RETRY_DELAYS_S",
    "TRANSIENT_ERRORS",
    "EdgeAddress",
    "EdgeCall",
    "EdgeClientBase",
    "auth_headers",
    "certificate_error",
    "check_response",
    "command_call",
    "command_status_call",
    "edge_address",
    "event_json",
    "events_call",
    "frame_call",
    "info_call",
    "lease_call",
    "load_token",
    "rejected",
    "sequence_call",
    "state_call",
    "timed_out",
    "truth_call",
    "unreachable",
    "whoami_call",
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
        return EdgeAddress(settings.edge_url, settings.edge_token, settings.edge_ca_file)
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
    return EdgeAddress(settings.edge_url, token, settings.edge_ca_file)


def auth_headers(token: str, holder: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if holder:
        headers[LEASE_HEADER] = holder
    return headers


class EdgeClientBase:
    """What both edge clients start from: the edge's URL and token, given or from the settings;
    for an ``https`` URL the TLS context that verifies the edge (``ca_file``: the CA that
    signed its certificate, else the system's); the lease holder it speaks for (``holder``,
    else the one of the lease this code runs inside, `current_holder`)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        token_file: Path | None,
        ca_file: Path | None = None,
        holder: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = load_token(token, token_file)
        self._stream_port: int | None = None
        self._protocol_checked = False  # the edge's /v1/info protocol is this client's
        self._tls = client_context(ca_file) if urlsplit(self.url).scheme == "https" else None
        self.holder = self._own_holder = holder or current_holder()

    def _use_holder(self, holder: str | None) -> None:
        """Speak for ``holder`` from now on (None: back to the holder given at creation)."""
        self.holder = holder or self._own_holder

    @classmethod
    def from_settings(
        cls, settings: ScopeflowSettings | None = None, *, timeout: float = 30.0
    ) -> Self:
        """A client of the edge named by the settings: ``SCOPEFLOW_EDGE_URL`` and
        ``SCOPEFLOW_EDGE_TOKEN_FILE`` (or ``SCOPEFLOW_EDGE_TOKEN``); read now when ``settings``
        is None. Raises `ConfigurationError` naming the variable to set when one is missing."""
        address = edge_address(settings)
        return cls(address.url, token=address.token, ca_file=address.ca_file, timeout=timeout)  # type: ignore[call-arg]

    @classmethod
    def for_microscope(
        cls, name: str, settings: ScopeflowSettings | None = None, *, timeout: float = 30.0
    ) -> Self:
        """A client of microscope ``name``'s edge from the registry in the settings
        (``[microscopes.NAME]``: url, token_file, ca_file); `ConfigurationError` naming the
        registered ones when it is unknown."""
        address = microscope_address(name, settings)
        return cls(address.url, token=address.token, ca_file=address.ca_file, timeout=timeout)  # type: ignore[call-arg]

    @classmethod
    def connect(
        cls,
        *,
        microscope: str | None = None,
        url: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> Self:
        """What a flow's parameters name: microscope ``microscope`` from the registry when
        given, else the edge at ``url`` with ``token_file`` and ``ca_file``."""
        if microscope:
            return cls.for_microscope(microscope)
        if not url:
            raise ConfigurationError("no edge: give a microscope name or an edge URL")
        return cls(url, token=None, token_file=token_file, ca_file=ca_file)

    def _http_options(self, timeout: float) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "headers": auth_headers(self._token, self.holder),
            "timeout": timeout,
            "verify": self._tls if self._tls is not None else True,
        }


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


def whoami_call() -> EdgeCall[WhoAmI]:
    return EdgeCall("GET", "/v1/whoami", lambda r: WhoAmI.model_validate(r.json()))


def _lease(response: httpx.Response) -> LeaseInfo | None:
    body = response.json()
    return None if body is None else LeaseInfo.model_validate(body)


def lease_call() -> EdgeCall[LeaseInfo | None]:
    return EdgeCall("GET", "/v1/lease", _lease)


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
        message = detail.get("message") if isinstance(detail, dict) else detail
        raise EdgeUnauthorized(f"edge refused the token: {message}")
    raise rejected(response.status_code, detail, f"HTTP {response.status_code}")


def rejected(status_code: int, detail: object, status_text: str) -> EdgeRejected:
    """The error for a refused request: ``detail`` is the edge's refusal body (or text);
    `EdgeForbidden` for 403, `MicroscopeLeased` for 423."""
    message = detail.get("message") if isinstance(detail, dict) else detail
    kind = {403: EdgeForbidden, 423: MicroscopeLeased}.get(status_code, EdgeRejected)
    return kind(
        f"edge refused the request ({status_text}): {message}",
        status_code=status_code,
        detail=detail,
    )


def certificate_error(url: str, exc: BaseException) -> EdgeCertificateError | None:
    """The error to raise when ``exc`` (or what caused it) is a failed TLS verification of
    the edge's certificate; None for any other error."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError) or (
            "CERTIFICATE_VERIFY_FAILED" in str(cause)
        ):
            return EdgeCertificateError(
                f"the TLS certificate of the edge at {url} is not trusted ({cause}); pass the "
                "CA that signed it: ca_file=... (SCOPEFLOW_EDGE_CA_FILE, or ca_file in "
                "[microscopes.NAME]); `scopeflow edge tls self-signed` writes it as ca.pem"
            )
        cause = cause.__cause__ or cause.__context__
    return None


def unreachable(url: str, exc: Exception) -> EdgeUnavailable | EdgeCertificateError:
    if untrusted := certificate_error(url, exc):
        return untrusted
    return EdgeUnavailable(
        f"edge agent at {url} is unreachable ({exc}); is `scopeflow edge serve` running and is "
        "the URL right?"
    )


def timed_out(url: str, exc: Exception) -> EdgeUnavailable:
    return EdgeUnavailable(f"edge agent at {url} timed out: {exc}")
