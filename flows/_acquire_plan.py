"""A user's useq-schema MDASequence: read strictly, shortened for a rehearsal, checked against an
edge's envelope, and laid out as one image per field of view with the sequence's own axes."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import useq
import yaml
from pydantic import ValidationError

from scopeflow import ConfigurationError, EnvelopeViolation, unknown_useq_fields
from tasks.hardware import HardwareContext, SafetyEnvelope

__all__ = [
    "FieldPlan",
    "check_envelope",
    "describe_event",
    "image_events",
    "is_image",
    "load_sequence",
    "normalised_event",
    "plan_fields",
    "shorten_sequence",
]

_USEQ_DOCS = "https://pymmcore-plus.github.io/useq-schema/"


def load_sequence(path: Path) -> useq.MDASequence:
    """The MDASequence in ``path`` (YAML or JSON). ConfigurationError naming the file, the
    place and the fix for a missing file, malformed YAML/JSON, a wrong value or an unknown
    field (useq-schema itself ignores unknown fields: a misspelt ``chanels`` would silently
    acquire no channels)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the sequence file {path}: {exc.strerror or exc}; give the path of a "
            "useq-schema MDASequence in YAML or JSON"
        ) from exc
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigurationError(
            f"{path} is not valid YAML/JSON{where}: {problem}; fix the syntax there (indent "
            "nested keys with spaces, quote values holding ':' or '#')"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{path} holds {type(data).__name__}, not a mapping; an MDASequence is a mapping "
            "with keys such as channels, time_plan, z_plan, stage_positions, axis_order "
            f"(see {_USEQ_DOCS})"
        )
    try:
        sequence = useq.MDASequence.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ConfigurationError(
            f"{path} is not a valid useq-schema MDASequence: {problems}; fix these fields "
            f"(see {_USEQ_DOCS})"
        ) from exc
    unknown = unknown_useq_fields(data, sequence)
    if unknown:
        raise ConfigurationError(
            f"{path}: {unknown[0].message()}"
            + (f"; {len(unknown)} unknown fields in all" if len(unknown) > 1 else "")
        )
    return sequence


def shorten_sequence(sequence: useq.MDASequence, max_exposure_ms: float) -> useq.MDASequence:
    """The same acquisition as a rehearsal: each time-plan phase keeps its number of time points
    with no wait between them, exposures are at most ``max_exposure_ms``; positions, grid, z,
    channels, autofocus and the order of events stay (sub-sequences likewise)."""
    update: dict[str, Any] = {}
    if sequence.time_plan is not None:
        update["time_plan"] = _no_waits(sequence.time_plan)
    if sequence.channels:
        update["channels"] = tuple(
            ch.model_copy(update={"exposure": min(ch.exposure, max_exposure_ms)})
            if ch.exposure is not None
            else ch
            for ch in sequence.channels
        )
    if sequence.stage_positions:
        update["stage_positions"] = tuple(
            pos.model_copy(update={"sequence": shorten_sequence(pos.sequence, max_exposure_ms)})
            if pos.sequence is not None
            else pos
            for pos in sequence.stage_positions
        )
    return sequence.model_copy(update=update)


def _no_waits(plan: Any) -> Any:
    if isinstance(plan, useq.MultiPhaseTimePlan):
        return useq.MultiPhaseTimePlan(
            phases=[useq.TIntervalLoops(interval=0, loops=p.num_timepoints()) for p in plan.phases]
        )
    return useq.TIntervalLoops(interval=0, loops=plan.num_timepoints())


def is_image(event: useq.MDAEvent) -> bool:
    """True for an event that makes a frame (no action, or acquire_image)."""
    return event.action is None or isinstance(event.action, useq.AcquireImage)


def image_events(events: Iterable[useq.MDAEvent]) -> list[useq.MDAEvent]:
    return [e for e in events if is_image(e)]


def normalised_event(event: useq.MDAEvent | Mapping[str, Any]) -> dict[str, Any]:
    """An event as JSON for comparing what was planned with what the edge ran (metadata, which
    the runner annotates, and the parent sequence, which the edge does not get, left out)."""
    if not isinstance(event, useq.MDAEvent):
        event = useq.MDAEvent.model_validate(dict(event))
    out: dict[str, Any] = event.model_dump(mode="json", exclude={"metadata", "sequence"})
    return out


def describe_event(number: int, event: useq.MDAEvent) -> str:
    """``event 12 (t=0, p=1, g=3, c=0, z=4; channel Cy5; x=9 y=20 z=54 µm)``."""
    index = ", ".join(f"{k}={v}" for k, v in event.index.items())
    parts = [index] if index else []
    if event.channel is not None:
        parts.append(f"channel {event.channel.config}")
    where = " ".join(
        f"{axis}={value:g}"
        for axis, value in (("x", event.x_pos), ("y", event.y_pos), ("z", event.z_pos))
        if value is not None
    )
    if where:
        parts.append(f"{where} µm")
    return f"event {number} ({'; '.join(parts)})"


def check_envelope(
    events: Sequence[useq.MDAEvent], envelope: Mapping[str, Any], state: Mapping[str, Any]
) -> None:
    """Refuse, before anything moves, a sequence the edge's envelope forbids: ConfigurationError
    naming the event (its number and axes), the limit and the value."""
    env = SafetyEnvelope.model_validate(dict(envelope))
    context = HardwareContext(
        channel=state.get("channel"),
        exposure_ms=float(state.get("exposure_ms") or 0.0),
        intensity=state.get("intensity"),
    )
    try:
        env.check_events(events, context)
    except EnvelopeViolation as exc:
        raise envelope_refusal(events, str(exc), exc.limit, exc.value) from exc
    # the light-dose budget is the edge's to judge (it knows what is used and reserved)


def envelope_refusal(
    events: Sequence[useq.MDAEvent], message: str, limit: object, value: object
) -> ConfigurationError:
    """The error for a sequence the envelope refuses, naming the event the message points at."""
    found = re.match(r"event (\d+):", message)
    where = ""
    if found and int(found.group(1)) < len(events):
        number = int(found.group(1))
        where = f"{describe_event(number, events[number])}: "
        message = message[found.end() :].strip()
    return ConfigurationError(
        f"the edge's safety envelope refuses this sequence, nothing was queued or moved: {where}"
        f"{message} (limit {limit}, value {value!r}); change the sequence, or ask the "
        "microscope's owner to widen the envelope"
    )


@dataclass(frozen=True)
class FieldPlan:
    """One field of view (a stage position, and a grid tile when the sequence has a grid): its
    store name, its axes' sizes (t, c, z as the sequence uses them), channel names, steps."""

    p: int
    g: int
    name: str
    position_name: str | None
    sizes: dict[str, int]
    channels: tuple[str, ...]
    z_step_um: float
    t_interval_s: float
    planned_times_s: tuple[float, ...]
    images: int
    stage_xy_um: tuple[float | None, float | None]

    @property
    def key(self) -> tuple[int, int]:
        return (self.p, self.g)


def plan_fields(events: Sequence[useq.MDAEvent]) -> dict[tuple[int, int], FieldPlan]:
    """One image per (p, g) of the image events, with the axes those events index."""
    groups: dict[tuple[int, int], list[useq.MDAEvent]] = {}
    for event in events:
        if is_image(event):
            key = (int(event.index.get("p", 0)), int(event.index.get("g", 0)))
            groups.setdefault(key, []).append(event)
    with_grid = any("g" in e.index for group in groups.values() for e in group)
    plans = {}
    for (p, g), group in sorted(groups.items()):
        axes = [a for a in ("t", "c", "z") if any(a in e.index for e in group)]
        sizes = {a: max(int(e.index.get(a, 0)) for e in group) + 1 for a in axes}
        channels: dict[int, str] = {}
        for e in group:
            if e.channel is None:
                continue
            c = int(e.index.get("c", 0))
            if channels.setdefault(c, e.channel.config) != e.channel.config:
                raise ConfigurationError(
                    f"position {p}: channel index {c} is both {channels[c]!r} and "
                    f"{e.channel.config!r}; give each channel of the sequence one index"
                )
        names = tuple(channels.get(c, f"channel {c}") for c in range(sizes.get("c", 0)))
        times: dict[int, float] = {}
        zs: dict[int, float] = {}
        for e in group:
            times.setdefault(int(e.index.get("t", 0)), float(e.min_start_time or 0.0))
            if e.z_pos is not None:
                zs.setdefault(int(e.index.get("z", 0)), float(e.z_pos))
        first = group[0]
        base = f"p{p:03d}"
        plans[(p, g)] = FieldPlan(
            p=p,
            g=g,
            name=f"{base}_g{g:03d}" if with_grid else base,
            position_name=first.pos_name,
            sizes=sizes,
            channels=names if "c" in sizes else (),
            z_step_um=_step(zs),
            t_interval_s=_step(times),
            planned_times_s=tuple(times.get(t, 0.0) for t in range(sizes.get("t", 1))),
            images=len(group),
            stage_xy_um=(first.x_pos, first.y_pos),
        )
    return plans


def _step(values: Mapping[int, float]) -> float:
    """The step between consecutive indices (1.0 when there are fewer than two or none)."""
    ordered = [values[k] for k in sorted(values)]
    steps = sorted(abs(b - a) for a, b in itertools.pairwise(ordered) if b != a)
    return steps[len(steps) // 2] if steps else 1.0
