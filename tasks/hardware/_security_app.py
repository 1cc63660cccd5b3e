"""Access control on the edge's HTTP and WebSocket API (`install_security`).

- `AccessMiddleware` (pure ASGI) admits every request through the `EdgeGate` before routing,
  so a route added later is guarded without being listed anywhere: 401 without or with a wrong
  token, 403 for a role too low, 423 when another holder leases the microscope; a refused
  WebSocket is closed with 1008 before it is accepted. Control requests are audited with
  their command id and type (read from the first bytes of the body as the app consumes it).
- Routes of their own: ``/v1/whoami``, the lease (``GET/POST/DELETE /v1/lease``), and the
  admin's ``POST /v1/admin/users/reload`` and ``DELETE /v1/admin/lease``.
- The OpenAPI names the access status codes (401, 403, 423) on every guarded operation.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from scopeflow import (
    LEASE_HEADER,
    ConfigurationError,
    LeaseInfo,
    LeaseRequest,
    Refusal,
    WhoAmI,
)

from ._audit import command_fields
from ._auth import Principal
from ._gate import LEASE_PATHS, AccessRefused, EdgeGate, needed_role
from ._lease import LeaseRefused

__all__ = ["AccessMiddleware", "install_security"]

_WS_POLICY_VIOLATION = 1008
_AUDIT_BODY_BYTES = 4096

Message = MutableMapping[str, Any]


def _bearer(value: str | None) -> str | None:
    if value and value.startswith("Bearer "):
        return value.removeprefix("Bearer ")
    return None


class AccessMiddleware:
    """Admits each HTTP request and WebSocket through the gate (see the module docstring)."""

    def __init__(self, app: ASGIApp, gate: EdgeGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        needed = needed_role(method, path)
        if needed is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = _bearer(headers.get("authorization"))
        if token is None and scope["type"] == "websocket":
            token = QueryParams(scope.get("query_string", b"")).get("token")
        holder = headers.get(LEASE_HEADER)
        try:
            principal = await anyio.to_thread.run_sync(
                lambda: self.gate.admit(
                    token, needed, holder=holder, lease_free=path in LEASE_PATHS
                )
            )
        except AccessRefused as refused:
            if refused.principal is not None:  # a known user refused by role or lease
                body = await _body_start(receive) if scope["type"] == "http" else b""
                self.gate.audit(
                    refused.principal, via="http", method=method, path=path, holder=holder,
                    status=refused.status, **command_fields(body),
                )  # fmt: skip
            if scope["type"] == "websocket":
                await receive()  # websocket.connect: then the refusal (HTTP 403 to the client)
            await _refuse(scope, send, refused)
            return
        scope.setdefault("state", {})["principal"] = principal
        if needed == "read" or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        status: list[int] = []

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _AUDIT_BODY_BYTES:
                body.extend(message.get("body", b"")[: _AUDIT_BODY_BYTES - len(body)])
            return message

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive_and_keep, send_and_note)
        finally:
            self.gate.audit(
                principal, via="http", method=method, path=path, holder=holder,
                status=status[0] if status else None, **command_fields(bytes(body)),
            )  # fmt: skip


async def _body_start(receive: Receive) -> bytes:
    """The first bytes of a refused request's body (for the audit log)."""
    body = bytearray()
    while len(body) < _AUDIT_BODY_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            break
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return bytes(body[:_AUDIT_BODY_BYTES])


async def _refuse(scope: Scope, send: Send, refused: AccessRefused) -> None:
    if scope["type"] == "websocket":
        reason = refused.refusal.message[:120]
        await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION, "reason": reason})
        return
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    response = JSONResponse(
        {"detail": refused.refusal.model_dump(mode="json", exclude_none=True)},
        status_code=refused.status,
        headers=headers,
    )
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSON response reads nothing
    return {"type": "http.disconnect"}


def _principal(request: Request) -> Principal:
    principal = request.state.principal
    assert principal is not None  # the middleware admitted the request
    return principal


def _lease_refusal(exc: LeaseRefused) -> JSONResponse:
    refusal = Refusal(error="leased", message=str(exc), lease=exc.lease)
    return JSONResponse({"detail": refusal.model_dump(mode="json", exclude_none=True)}, 423)


_REFUSAL_SCHEMA = {"$ref": "#/components/schemas/Refusal"}
_ACCESS_RESPONSES: dict[str, str] = {
    "401": "Missing or wrong token (`detail.error`: unauthorized)",
    "403": "The token's role may not do this (`detail.error`: forbidden)",
}
_LEASED_RESPONSE = (
    "Another holder leases the microscope (`detail.error`: leased; `detail.lease` says who "
    "and until when)"
)


def _router(gate: EdgeGate) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/whoami", tags=["access"])
    def whoami(request: Request) -> WhoAmI:
        """The user this token belongs to, its role, and the lease in force."""
        principal = _principal(request)
        return WhoAmI(
            user=principal.user,
            role=principal.role,
            holder=request.headers.get(LEASE_HEADER),
            lease=gate.lease.current(),
        )

    @router.get("/v1/lease", tags=["access"])
    def current_lease() -> LeaseInfo | None:
        """The lease in force (null when the microscope is free)."""
        return gate.lease.current()

    @router.post("/v1/lease", tags=["access"], responses={423: {"description": _LEASED_RESPONSE}})
    def acquire_lease(body: LeaseRequest, request: Request) -> Any:
        """Take the microscope for ``holder`` for ``ttl_s`` seconds, or renew it (the same
        user and holder); 423 while another holder's lease runs."""
        try:
            return gate.lease.acquire(_principal(request).user, body)
        except LeaseRefused as exc:
            return _lease_refusal(exc)

    @router.delete(
        "/v1/lease",
        tags=["access"],
        responses={423: {"description": _LEASED_RESPONSE}},
    )
    def release_lease(
        request: Request, holder: str = Query(..., description="The holder that took it")
    ) -> Any:
        """Release the lease of ``holder`` (null when none was held)."""
        try:
            return gate.lease.release(_principal(request).user, holder)
        except LeaseRefused as exc:
            return _lease_refusal(exc)

    @router.delete("/v1/admin/lease", tags=["admin"])
    def break_lease(request: Request) -> LeaseInfo | None:
        """Break whatever lease is in force (admins only); returns it."""
        return gate.lease.release(_principal(request).user, "", force=True)

    @router.post(
        "/v1/admin/users/reload",
        tags=["admin"],
        responses={
            422: {"description": "The users file is invalid; the users in force stay"},
        },
    )
    def reload_users() -> Any:
        """Re-read the users file now (it is also re-read on change): tokens rotated or
        revoked there take effect; an invalid file is refused and the users in force stay."""
        try:
            count = gate.users.reload()
        except ConfigurationError as exc:
            refusal = Refusal(error="invalid_command", message=str(exc))
            return JSONResponse({"detail": refusal.model_dump(mode="json", exclude_none=True)}, 422)
        return {"users": count}

    return router


def install_security(app: FastAPI, gate: EdgeGate) -> None:
    """Guard every route of ``app`` with ``gate``, add the access routes and document the
    access status codes in the OpenAPI."""
    app.add_middleware(AccessMiddleware, gate=gate)
    app.include_router(_router(gate))
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _document_access(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_access(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "Refusal" not in components:
        refusal = Refusal.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(refusal.pop("$defs", {}))
        components["Refusal"] = refusal
    error_body = {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": _REFUSAL_SCHEMA},
                "required": ["detail"],
            }
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            needed = needed_role(method, path)
            if needed is None:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in _ACCESS_RESPONSES.items():
                if code == "403" and needed == "read":
                    continue
                responses.setdefault(code, {"description": description, "content": error_body})
            if needed == "control" and path not in LEASE_PATHS:
                responses.setdefault("423", {"description": _LEASED_RESPONSE})
            for code in ("422", "423"):
                if code in responses:
                    responses[code].setdefault("content", error_body)
