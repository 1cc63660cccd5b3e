"""Analysis hooks of the acquisition flow: which frames the closed loop hands to the workers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from scopeflow import CommandDone, EventFailed
from tasks.live import FrameSource, LiveFrame

from ._acquire_plan import FieldPlan

__all__ = ["SelectedFrames", "position_frame_selector"]


class SelectedFrames:
    """A frame source passing on only the frames ``wanted`` selects (``None``: all; notices
    all pass), each with its pixels as the payload: the camera does not wait for the analysis
    here, so a shared-memory reference would be overwritten in the edge's ring before a busy
    worker read it."""

    def __init__(self, source: FrameSource, wanted: FrameSelector | None) -> None:
        self._source = source
        self._wanted = wanted

    def frames(self) -> Iterator[LiveFrame | EventFailed | CommandDone]:
        for item in self._source.frames():
            if not isinstance(item, LiveFrame):
                yield item
            elif self._wanted is None or self._wanted(item.header.event):
                yield replace(item, payload=item.pixels())

    def stop(self) -> None:
        self._source.stop()


class FrameSelector:
    """``selector(event_json) -> bool``: one frame per visit of a field (t, p, g): the chosen
    channel at the field's middle z plane."""

    def __init__(self, plans: Mapping[tuple[int, int], FieldPlan], channel: str | None) -> None:
        self._plans = plans
        self._channel = channel

    def __call__(self, event: Mapping[str, object]) -> bool:
        index = event.get("index", {})
        assert isinstance(index, Mapping)
        plan = self._plans.get((int(index.get("p", 0)), int(index.get("g", 0))))
        if plan is None:
            return False
        if "z" in plan.sizes and int(index.get("z", 0)) != plan.sizes["z"] // 2:
            return False
        if "c" not in plan.sizes:
            return True
        channel = self._channel or (plan.channels[0] if plan.channels else None)
        c = int(index.get("c", 0))
        return c < len(plan.channels) and plan.channels[c] == channel


def position_frame_selector(
    plans: Mapping[tuple[int, int], FieldPlan], channel: str | None
) -> FrameSelector:
    return FrameSelector(plans, channel)
