"""Every status code the edge's HTTP API answers, with its body, for the OpenAPI document; and
the 422 answer to a request that fails validation (the reason per field, no echo of the input:
the input may hold NaN, which JSON cannot carry, or be megabytes long)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from scopeflow import Refusal

__all__ = ["RESPONSES", "document_body_errors", "validation_refused"]


class Problem(BaseModel):
    """A refusal that is a sentence (401 no or wrong token, 404 nothing there)."""

    detail: str


class RefusalBody(BaseModel):
    """A refusal with its kind, the limit and the offending value (409, 413, 422, 503)."""

    detail: Refusal


class FieldProblem(BaseModel):
    """What is wrong in one place of the request."""

    loc: list[str | int] = Field(description="Where: 'body', then the path into it")
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A request that is not what the route takes (422): each problem and where it is."""

    detail: list[FieldProblem]


def _doc(model: Any, description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


_AUTH = {401: _doc(Problem, "No token or a wrong one: send 'Authorization: Bearer <token>'")}
_TOO_LARGE = {413: _doc(RefusalBody, "The body is over max_body_bytes")}
_INVALID = {
    422: _doc(
        RefusalBody | ValidationProblem,
        "Refused: outside the safety envelope, or not a valid request (what and the fix)",
    )
}
_NOT_JSON_DOC = _doc(Problem, "The body cannot be read as JSON")
_BUSY = {503: _doc(RefusalBody, "The microscope failed while doing it (hardware_error)")}

RESPONSES: dict[str, dict[int | str, dict[str, Any]]] = {
    "open": {},
    "read": {**_AUTH},
    "query": {400: _NOT_JSON_DOC, **_AUTH, **_INVALID, **_BUSY},
    "frame": {**_AUTH, 404: _doc(Problem, "No such frame yet"), **_INVALID},
    "status": {**_AUTH, 404: _doc(Problem, "No such command in this session"), **_INVALID},
    "submit": {
        400: _NOT_JSON_DOC,
        **_AUTH,
        409: _doc(RefusalBody, "The command id was used before for a different command"),
        **_TOO_LARGE,
        **_INVALID,
        **_BUSY,
    },
}
"""Documented answers by kind of route (every route also answers 413 for a large body)."""
for _kind in ("read", "query", "frame", "status"):
    RESPONSES[_kind].update(_TOO_LARGE)


async def validation_refused(request: Request, exc: Exception) -> JSONResponse:
    """422 with each problem's place, message and type."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid")),
            "type": str(error.get("type", "value_error")),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def document_body_errors(schema: dict[str, Any]) -> None:
    """Name the answers every route can give whatever it declares (routes added later, such
    as the access routes, included): 413 from the body limit, which runs before routing, and
    400 for a body that is not JSON where the route reads one."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, RefusalBody):
        if model.__name__ not in components:
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("413", _documented("RefusalBody", _TOO_LARGE[413]))
            if "requestBody" in operation:
                responses.setdefault("400", _documented("Problem", _NOT_JSON_DOC))


def _documented(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"description": doc["description"], "content": {"application/json": {"schema": ref}}}
