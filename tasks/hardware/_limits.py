"""Bounds on the work one request can make the edge do.

- `BodyLimit`: an ASGI middleware that refuses a body over ``max_body_bytes`` with 413 before
  the application parses it (a declared length is refused at once; a chunked body is counted
  as it arrives and never held beyond the limit).
- `expand_events`: a useq sequence to its events, refused before expansion when its plans
  bound it above ``max_events`` or their layout above ``max_steps`` (`plan_cost`: useq orders
  random points and walks spirals and polygons in pure Python, in time growing faster than
  the events), stopping one past ``max_events`` in any case, and turning useq's own
  arithmetic failures (a time plan with a zero interval) into a refusal.
- `check_queue_room`, `check_truth_time`: the queue and the simulated clock.
- `json_safe`: a refusal's value that JSON can carry (no NaN or infinity).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import useq
from useq import _iter_sequence as useq_iteration  # noqa: PLC2701 (its caches: see below)

from scopeflow import InvalidRequest, plan_cost

__all__ = [
    "BodyLimit",
    "check_event_count",
    "check_queue_room",
    "check_truth_region",
    "check_truth_time",
    "expand_events",
    "json_safe",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse HTTP request bodies over ``max_bytes`` with 413 and a JSON reason."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(send, None)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int | None) -> None:
        told = f"{size} bytes" if size is not None else "more"
        detail = {
            "error": "too_large",
            "message": f"the request body is {told}, over the edge's limit of {self.max_bytes} "
            "bytes (max_body_bytes); send fewer events per request (several commands), or "
            "raise SCOPEFLOW_EDGE__LIMITS__MAX_BODY_BYTES on the edge",
            "limit": "max_body_bytes",
            "value": size,
        }
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def forget_useq_caches() -> None:
    """Empty useq's per-sequence caches. useq (0.9) keeps each axis of every sequence it
    iterates in unbounded ``functools.cache`` s keyed by the sequence, so an edge that expands
    a sequence per command kept all of them, with their time points (32 bytes a frame)."""
    for name in ("_iter_axis", "_sizes", "_used_axes"):
        cached = getattr(useq_iteration, name, None)
        if callable(getattr(cached, "cache_clear", None)):
            cached.cache_clear()


def expand_events(
    sequence: useq.MDASequence, max_events: int, max_steps: float = math.inf
) -> list[useq.MDAEvent]:
    """The events of ``sequence``; refused when there are more than ``max_events``, when useq
    would take more than ``max_steps`` laying its plans out (`plan_cost`), or when useq cannot
    compute them. Both are bounded from the plans' sizes first: useq lays a grid out in arrays,
    so a grid of 10^15 fields would be allocated before its first event."""
    try:
        cost = plan_cost(sequence, max_steps)
        bound = cost.events
        if bound <= max_events and cost.steps <= max_steps:
            try:
                events = list(itertools.islice(iter(sequence), max_events + 1))
            finally:
                forget_useq_caches()
        else:
            events = []
    except (ArithmeticError, ValueError, TypeError, MemoryError) as exc:
        raise InvalidRequest(
            f"the sequence cannot be expanded into events ({type(exc).__name__}: {exc}); check "
            "its plans (a time plan needs an interval above 0 with a duration, or loops)",
            limit="sequence",
            value=None,
        ) from exc
    if bound > max_events or len(events) > max_events:
        raise InvalidRequest(
            f"the sequence expands to more than {max_events} events (up to {_about(bound)} by "
            "its plans; max_events_per_request); split it into several sequences, each under a "
            "new command id",
            limit="max_events_per_request",
            value=min(bound, _INT64) if bound > max_events else len(events),
        )
    if cost.steps > max_steps:
        raise InvalidRequest(
            f"laying the sequence's plans out would take about {_about_steps(cost.steps)} "
            f"steps (~1 µs each), over max_layout_steps {max_steps:,.0f}; the costliest is "
            f"{cost.worst}. Order random points 'nearest_neighbor' or not at all (order: null) "
            "instead of 'two_opt', use fewer points, a row-wise grid instead of a spiral, a "
            "polygon closer to its fields of view, or split the sequence",
            limit="max_layout_steps",
            value=json_safe(min(cost.steps, float(_INT64))),
        )
    return events


_INT64 = 2**63 - 1


def _about(count: int) -> str:
    return f"{count:,}" if count < 10**12 else f"10^{len(str(count)) - 1}"


def _about_steps(steps: float) -> str:
    if steps < 1e12:
        return f"{steps:,.0f}"
    return f"10^{int(math.log10(steps))}" if math.isfinite(steps) else "infinitely many"


def check_event_count(events: Iterable[object], max_events: int) -> None:
    count = sum(1 for _ in events)
    if count > max_events:
        raise InvalidRequest(
            f"{count} events in one request exceed max_events_per_request {max_events}; "
            "send them as several commands",
            limit="max_events_per_request",
            value=count,
        )


def check_queue_room(queued: int, adding: int, max_queued: int) -> None:
    if queued + adding > max_queued:
        raise InvalidRequest(
            f"the edge's queue holds {queued} events and this command adds {adding}, over "
            f"max_queued_events {max_queued}; wait until the queue drains (GET /v1/state, "
            "queue_depth) and submit again",
            limit="max_queued_events",
            value=queued + adding,
        )


def check_truth_time(t_s: float | None, now_s: float, horizon_s: float) -> None:
    """The simulated sample grows with time: ask only about times up to ``horizon_s`` ahead."""
    if t_s is None:
        return
    if not math.isfinite(t_s) or not 0 <= t_s <= now_s + horizon_s:
        raise InvalidRequest(
            f"t_s {t_s!r} is outside the simulated time the edge answers about: 0 to "
            f"{now_s + horizon_s:.6g} s (now {now_s:.6g} s + truth_horizon_s {horizon_s:g}); "
            "ask about the sample_time_s of a frame, or leave t_s out for now",
            limit="truth_horizon_s",
            value=json_safe(t_s),
        )


def check_truth_region(
    region: tuple[float, float, float, float] | None,
    whole: tuple[float, float, float, float],
    max_mm2: float,
) -> None:
    """Listing cells costs time per cell: bound the region (None: the whole slide)."""
    x0, y0, x1, y1 = region if region is not None else whole
    area_mm2 = abs(x1 - x0) * abs(y1 - y0) / 1e6
    if not area_mm2 <= max_mm2:
        raise InvalidRequest(
            f"the region asked about is {area_mm2:.4g} mm², over max_truth_area_mm2 {max_mm2:g}; "
            "ask about a smaller region (x0, y0, x1, y1 in µm), e.g. a field of view",
            limit="max_truth_area_mm2",
            value=json_safe(area_mm2),
        )


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float written as text (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value
