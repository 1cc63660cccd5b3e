"""The event-triggered demo replayed in-process: the demo's picks and protocols on the same
simulator, the flow's own detectors and policy, detection frames rendered at the times the policy
asks for (plus a fixed command latency); no edge, no workers, no machine load.

Deterministic and fast (a seed in 2-5 s on one core), so detectors and policy can be compared on
many seeds, in tests and in ``benchmarks/event_replay.py``. The score is the flow's own
(``flows._event_truth``: both detection frames around a true division fast and at most 1.5 fast
intervals apart). Each missed event gets a reason, read from the replay's decisions at its
position between its rounding and its division:

- ``never fired``: no detector fired there and the position stayed gentle;
- ``fired, muted (cooldown)``: a detector fired there, but the position stayed gentle;
- ``fast, ended early``: the position went fast, then back to gentle before the division;
- ``fast for another event``: it was fast already for something else, and went back;
- ``late``: fast around the division, but the frames around it too far apart.
"""

from __future__ import annotations

import heapq
from typing import Any

from flows._event_demo import TIME_SCALE, pick_dividing_cells_late
from flows._event_params import EventTriggeredParams
from flows._event_truth import score_event_frames
from flows._tracking_demo import CAMERA, OBJECTIVE
from tasks.decisions import EventTriggeredPolicy, FrameView
from tasks.hardware import SafetyEnvelope
from tasks.hardware.sim import SimulatorConfig, build_simulated_core
from tasks.inference import analyse_frame, load_model

__all__ = ["replay_event_seed"]

PICK_AT_S = 10.0  # wall seconds after the edge starts: the demo's pick (Prefect warmed up)
DURATION_S = 60.0
POSITIONS = 3
INTENSITY = 50.0  # the simulated edge's intensity at start
LATENCY_S = 0.05  # wall: detection frame -> the next command at the edge


def replay_event_seed(
    seed: int,
    *,
    start_delay_s: float = 20.0,
    params: dict[str, Any] | None = None,
    keep_views: bool = False,
) -> dict[str, Any]:
    """One seed: the demo's pick, the policy on frames rendered at the due times, scored."""
    config = SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=TIME_SCALE)
    t_pick = PICK_AT_S * TIME_SCALE
    chosen = pick_dividing_cells_late(config, t_pick, DURATION_S * TIME_SCALE, POSITIONS)
    run = EventTriggeredParams(
        positions=chosen, objective=OBJECTIVE, duration_s=DURATION_S, **(params or {})
    )
    policy = EventTriggeredPolicy(
        [(p.name, p.x_um, p.y_um) for p in chosen], run.rules(), run.event_detectors()
    )
    model = load_model(run.model, **run.model_options)
    _, sim = build_simulated_core(config)
    px = config.pixel_size_um(OBJECTIVE)
    sx, sy = (-1.0 if config.flip_x else 1.0), (-1.0 if config.flip_y else 1.0)
    t0 = t_pick + start_delay_s * TIME_SCALE  # sample time the watch phase starts at
    state = policy.initial_state()
    queue: list[tuple[float, int, int, Any]] = []
    for k, command in enumerate(policy.first_commands(state)):
        heapq.heappush(queue, (command.due_s, k, 0, command))
    busy_until, serial = 0.0, len(queue)
    frames: dict[int, list[tuple[float, int, int]]] = {}
    decisions: list[dict[str, Any]] = []
    index = 0
    views: list[tuple[int, float, Any]] = []
    while queue:
        due, _, _, command = heapq.heappop(queue)
        at = max(due + LATENCY_S, busy_until)
        for event in command.events:
            exposure = float(event.exposure or 0.0)
            t_s = t0 + at * TIME_SCALE
            image = sim.render(
                x_um=event.x_pos, y_um=event.y_pos, z_um=event.z_pos, objective=OBJECTIVE,
                channel=event.channel.config, exposure_ms=exposure, intensity_pct=INTENSITY,
                t_s=t_s, add_dose=True,
            )  # fmt: skip
            at += exposure / 1e3
            view = FrameView(
                index=index, command_id=command.key, stage_x_um=event.x_pos,
                stage_y_um=event.y_pos, stage_z_um=event.z_pos, width=CAMERA, height=CAMERA,
                pixel_size_um=px, affine=(sx * px, 0.0, 0.0, 0.0, sy * px, 0.0),
                event_index=dict(event.index), t_ready_ns=int(t_s * 1e9),
            )  # fmt: skip
            index += 1
            table = analyse_frame(model, image, pixel_size_um=px)
            state, decision = policy.decide(state, view, table)
            summary = decision.summary
            if summary.get("role") == "detect":
                p = int(summary["p"])
                frames.setdefault(p, []).append((t_s, int(event.index["m"]), int(summary["t"])))
                decisions.append({**summary, "sample_time_s": t_s})
                if keep_views:  # the view the detectors saw (the position's latest)
                    views.append((p, t_s, state.positions[p].previous))
            for follow in decision.commands:
                serial += 1
                heapq.heappush(queue, (follow.due_s, serial, 0, follow))
        busy_until = at
    truth = score_event_frames(
        frames,
        sim.sample,
        [(p.name, p.x_um, p.y_um) for p in chosen],
        roi_um=run.roi_um,
        max_spacing_s=1.5 * run.fast.interval_s * TIME_SCALE,
        rounding_s=config.rounding_min * 60.0,
    )
    for event in truth["events"]:
        if not event["captured"]:
            event["why"] = _why_missed(event, chosen, decisions, config)
    rows = [r for rows in frames.values() for r in rows]
    return {
        "seed": seed,
        **{k: truth[k] for k in ("events_true", "events_captured", "events")},
        "dose_ratio": round(_dose_ratio(policy, run, rows), 4),
        "triggers": sum(len(r.triggers) for r in state.positions),
        "time_points_fast": sum(m for _, m, _ in rows),
    } | ({"views": views, "decisions": decisions, "chosen": chosen} if keep_views else {})


def _dose_ratio(policy: EventTriggeredPolicy, run: EventTriggeredParams, rows: list) -> float:
    envelope = SafetyEnvelope()

    def dose(mode: str) -> float:
        return sum(
            envelope.dose_mj(e.channel.config, e.exposure or 0.0, INTENSITY)
            for e in policy.events_per_time_point(mode)  # type: ignore[arg-type]
        )

    fast = sum(m for _, m, _ in rows)
    used = fast * dose("fast") + (len(rows) - fast) * dose("gentle")
    always = len(run.positions) * (int(run.duration_s // run.fast.interval_s) + 1) * dose("fast")
    return used / always


def _why_missed(
    event: dict[str, Any], chosen: list, decisions: list[dict[str, Any]], config: SimulatorConfig
) -> str:
    """Read the replay's decisions at the event's position around its rounding."""
    p = next(k for k, c in enumerate(chosen) if c.name == event["position"])
    onset = event["time_s"] - config.rounding_min * 60.0
    rows = [d for d in decisions if d["p"] == p and onset <= d["sample_time_s"] <= event["time_s"]]
    before = [d for d in decisions if d["p"] == p and d["sample_time_s"] <= event["time_s"]]
    mode_at = before[-1]["next_mode"] if before else "gentle"
    fired_here = [d for d in rows if d.get("fired")]
    switched = [d for d in rows if d.get("switch") == "to fast"]
    if mode_at == "fast" or (before and before[-1]["mode"] == "fast"):
        return "late: fast frames too far apart"
    ended = next((str(d["switch"]) for d in rows if "to gentle" in str(d.get("switch"))), "?")
    if switched:
        return f"fast, ended early: {ended}"
    if any(d["mode"] == "fast" for d in rows):
        return f"fast for another event: {ended}"
    if fired_here:
        return "fired, muted (cooldown)"
    return "never fired"
