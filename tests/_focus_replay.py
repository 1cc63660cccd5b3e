"""Drive an ``AutofocusPolicy`` against the simulator in this process, without an edge: each
acquisition is rendered at its simulated time and scored with ``tasks.qc.focus_score``; a
frame costs ``frame_s`` of simulated time. For unit tests of the pure policy on a physical
sample (the flow tests run the real loop against a real edge)."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

from tasks.decisions import Acquire, AutofocusPolicy, FrameView
from tasks.hardware.sim import Simulation
from tasks.qc import focus_score


@dataclass(frozen=True)
class ReplayFrame:
    t_s: float
    z_um: float
    index: dict[str, int]
    summary: dict[str, Any]


def replay(
    policy: AutofocusPolicy,
    sim: Simulation,
    *,
    time_scale: float,
    frame_s: float = 2.0,
    objective: str = "20x",
    blank: bool = False,
) -> tuple[Any, list[ReplayFrame]]:
    state = policy.initial_state()
    queue: list[tuple[float, int, Acquire]] = []
    order = itertools.count()
    for command in policy.first_commands(state):
        heapq.heappush(queue, (command.due_s * time_scale, next(order), command))
    now, frames, n = 0.0, [], 0
    while queue:
        due, _, command = heapq.heappop(queue)
        now = max(now, due)
        for event in command.events:
            pixels = sim.render(
                x_um=event.x_pos,
                y_um=event.y_pos,
                z_um=event.z_pos,
                objective=objective,
                channel=event.channel.config,
                exposure_ms=event.exposure,
                t_s=now,
                intensity_pct=0.0 if blank else 50.0,
            )
            score = focus_score(pixels)
            view = FrameView(
                n,
                command.key,
                event.x_pos,
                event.y_pos,
                event.z_pos,
                pixels.shape[1],
                pixels.shape[0],
                0.325,
                (0.325, 0, 0, 0, 0.325, 0),
                dict(event.index),
                0,
            )
            n += 1
            state, decision = policy.decide(state, view, score)
            frames.append(ReplayFrame(now, event.z_pos, dict(event.index), decision.summary))
            now += frame_s
            for c in decision.commands:
                heapq.heappush(queue, (max(now, c.due_s * time_scale), next(order), c))
    return state, frames
