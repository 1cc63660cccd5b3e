"""The edge agent's HTTP/WebSocket API (FastAPI).

Refusals are the same as on the command channel (`_refusals.refusal_for`). On a simulated
microscope only, ``POST /v1/sim/faults`` makes the next snaps or stage moves fail (tests of the
failure policy against a real edge process).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from scopeflow import (
    PROTOCOL_VERSION,
    CommandAck,
    CommandRequest,
    CommandStatus,
    EdgeState,
    Frame,
    PumpRun,
    Stimulate,
    SubmitEvents,
    SubmitSequence,
    encode_prefix,
    protocol_mismatch,
)

from ._agent import EdgeAgent
from ._api_errors import RESPONSES, document_body_errors, validation_refused
from ._gate import EdgeGate
from ._limits import BodyLimit
from ._refusals import REFUSED_ERRORS, refusal_for
from ._security_app import install_security

__all__ = ["create_app"]

_WS_POLICY_VIOLATION = 1008
_Finite = Annotated[float | None, Query(allow_inf_nan=False)]


class SimFaults(BaseModel):
    """Failures to inject into the simulated microscope (``POST /v1/sim/faults``)."""

    model_config = ConfigDict(strict=True)  # counts are JSON integers: ``true`` is not 1

    snap: int = Field(0, ge=0, le=1000, description="The next N snaps raise a camera error")
    stage: int = Field(0, ge=0, le=1000, description="The next N XY moves raise a stage error")
    hang: int = Field(
        0, ge=0, le=1000, description="The next N XY moves never finish: the wait times out"
    )
    clear: bool = Field(False, description="Drop the failures still pending first")


_EVENTS_DOC = """Append acquisition events to the queue (they run after what is queued).

**Device actions.** An event whose action is a useq `CustomAction` named `pump` (data:
`PumpRun`) or `stimulate` (data: `Stimulate`, spots in stage µm) drives an external device:
a syringe pump, or a DMD/SLM pattern registered to the camera's field. `custom` must be in
the envelope's `allowed_actions` and the device in its `devices` allow-list. A request
outside the envelope is refused whole with **422** `envelope_violation` and nothing moves; its
`limit` names the bound: `devices.pumps` / `devices.stimulators` (device not allowed),
`devices.pumps.<device>.allowed_reservoirs`, `.max_volume_ul`, `.max_flow_ul_per_min`,
`devices.stimulators.<device>.max_intensity_percent`, `.max_duration_ms`, `.max_dose_mj`,
`.field_of_view` (a spot not wholly inside the field at the event's stage position),
`light_dose_budget_mj` (a pattern's dose counts in the budget); a custom action that is not
a device action, or whose data does not validate, is **422** `invalid_command` with limit
`custom_action`. A repeated command id runs nothing again.

**Pump volume and timing.** The volume each pump puts into the sample is kept in the data
dir's `pumps.json` (it survives a restart; a new sample starts with a new data dir or with the
file deleted). Runs that, with the volume used and the runs still queued, would pass
`devices.pumps.<device>.max_total_volume_ul` or
`.max_total_volume_ul_by_reservoir.<reservoir>` are refused with **422** (`value`:
`requested_ul`, `used_ul`, `left_ul`). A run certain to start while its pump still dispenses
(only pump runs between it and the pump's last run, and its `min_start_time` before that run's
end) is refused with **422** limit `devices.pumps.<device>.busy` (`value`: `busy_until`, UTC,
and `busy_for_s`, or `busy_until_s` on the command's timer) and the `min_start_time` that
would fit; any other overlap is refused when the run comes up (the pump's `Command` still
reads `Dispense`): a failed event, nothing pumped or counted."""

_DEVICE_ACTION_SCHEMAS: dict[str, Any] = {
    "x-device-actions": {
        "pump": PumpRun.model_json_schema(),
        "stimulate": Stimulate.model_json_schema(),
    }
}


def create_app(
    agent: EdgeAgent, access: EdgeGate | str, *, stream_port: int | None = None
) -> FastAPI:
    """Build the API around a started agent. Every route but health and OpenAPI needs a token
    whose role allows it (``access``: the edge's gate, or one shared token)."""
    app = FastAPI(
        title="scopeflow edge agent",
        version=str(PROTOCOL_VERSION),
        docs_url=None,
        redoc_url=None,
        description="Drives a microscope from useq-schema events under a safety envelope.",
    )

    install_security(app, EdgeGate.single_token(access) if isinstance(access, str) else access)
    _document_body_errors(app)

    async def _refused(request: Request, exc: Exception) -> JSONResponse:
        known = refusal_for(exc)
        assert known is not None  # registered only for the errors refusal_for knows
        status, refusal = known
        return JSONResponse({"detail": refusal.model_dump()}, status_code=status)

    for refused in REFUSED_ERRORS:
        app.add_exception_handler(refused, _refused)
    app.add_exception_handler(RequestValidationError, validation_refused)
    app.add_middleware(BodyLimit, max_bytes=agent.settings.limits.max_body_bytes)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:  # on the event loop: answers while workers are busy
        return {"status": "ok"}

    @app.get("/v1/info", tags=["meta"], responses=RESPONSES["read"])
    def info() -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "simulated": agent.simulated,
            "session": agent.session_id,
            "journal": str(agent.journal.root),
            "stream": {"websocket": "/v1/frames", "tcp_port": stream_port},
            "envelope": agent.envelope.model_dump(mode="json"),
        }

    @app.get("/v1/state", tags=["state"], responses=RESPONSES["read"])
    def state() -> EdgeState:
        return agent.state()

    @app.post(
        "/v1/events",
        tags=["acquisition"],
        responses=RESPONSES["submit"],
        description=_EVENTS_DOC,
        openapi_extra=_DEVICE_ACTION_SCHEMAS,
    )
    def submit_events(request: SubmitEvents) -> CommandAck:
        return agent.submit_events(request)

    @app.post("/v1/sequences", tags=["acquisition"], responses=RESPONSES["submit"])
    def submit_sequence(request: SubmitSequence) -> CommandAck:
        return agent.submit_sequence(request)

    @app.post("/v1/commands", tags=["acquisition"], responses=RESPONSES["submit"])
    def command(request: CommandRequest) -> CommandAck:
        return agent.command(request)

    @app.get(
        "/v1/commands/{command_id}",
        tags=["acquisition"],
        response_model=CommandStatus,
        responses=RESPONSES["status"],
    )
    def command_status(command_id: str) -> Response | CommandStatus:
        status = agent.command_status(command_id)
        if status is None:
            return JSONResponse(
                {
                    "detail": f"no command {command_id!r} was queued on this edge (this "
                    f"session {agent.session_id} or an earlier one on its data dir); only "
                    "submitted events and sequences have a status"
                },
                status_code=404,
            )
        return status

    if agent.simulated:

        @app.post("/v1/sim/faults", tags=["simulation"], responses=RESPONSES["query"])
        def sim_faults(faults: SimFaults) -> dict[str, int]:
            """Make the simulated camera or stage fail (pending counts are returned)."""
            return agent.inject_faults(
                faults.snap, faults.stage, hang=faults.hang, clear=faults.clear
            )

    @app.get("/v1/truth", tags=["simulation"], responses=RESPONSES["query"])
    def truth(
        x0: _Finite = None,
        y0: _Finite = None,
        x1: _Finite = None,
        y1: _Finite = None,
        t_s: _Finite = None,
    ) -> dict[str, Any]:
        corners = (x0, y0, x1, y1)
        region = None if any(c is None for c in corners) else corners
        return agent.truth(region, t_s)  # type: ignore[arg-type]

    @app.get(
        "/v1/frames/{index}",
        tags=["frames"],
        response_class=Response,
        responses={
            200: {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "description": "The frame: its SFF1 prefix and header, then its pixels",
            },
            **RESPONSES["frame"],
        },
    )
    def frame(index: int) -> Response:
        if not 0 <= index < agent.hub.count:
            return JSONResponse(
                {"detail": f"frame {index} does not exist yet ({agent.hub.count} journaled)"},
                status_code=404,
            )
        found = agent.hub.get(index, timeout=0)
        assert found is not None
        body = encode_prefix(found.header) + found.pixels.tobytes()
        return Response(body, media_type="application/octet-stream")

    @app.websocket("/v1/frames")
    async def frames(
        websocket: WebSocket,
        start: Annotated[int, Query(alias="from", ge=0)] = 0,
        token_query: Annotated[str | None, Query(alias="token")] = None,
        notices: bool = False,
        protocol: int | None = None,
    ) -> None:
        """Frames as binary messages (``SFF1``); with ``notices=true``, notices as text messages
        (their JSON) in their place; ``protocol``: the client's version, refused if not ours."""
        # the token (header or ``?token=``) was checked by the access middleware
        await websocket.accept()
        if mismatch := protocol_mismatch(PROTOCOL_VERSION, protocol, by="this edge"):
            # accepted first, so that the client reads the reason (a refused upgrade has none)
            await websocket.close(code=_WS_POLICY_VIOLATION, reason=mismatch[:120])
            return
        loop = asyncio.get_running_loop()
        index = start
        cursor = agent.hub.notice_cursor(start) if notices else None
        left = asyncio.ensure_future(websocket.receive())  # a client sends nothing but its close
        try:
            while not agent.hub.closed:
                found = await loop.run_in_executor(None, agent.hub.next_message, index, cursor, 0.5)
                if left.done():  # an idle stream's client left: no send would notice it
                    return
                if found is None:
                    continue
                if not isinstance(found, Frame):
                    await websocket.send_text(found.model_dump_json())
                    cursor = (cursor or 0) + 1
                    continue
                payload = encode_prefix(found.header) + found.pixels.tobytes()
                await websocket.send_bytes(payload)
                index += 1
        except WebSocketDisconnect:
            return
        finally:
            left.cancel()
        await websocket.close()

    return app


def _document_body_errors(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            document_body_errors(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
