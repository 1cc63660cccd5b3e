"""Two analyses in one loop phase: each frame goes to the analyzer its role names.

A live phase that interleaves kinds of frames (a tracking loop that re-focuses: focus sweeps
scored for sharpness on the focus workers, tracking frames segmented on the model's workers)
keeps one loop, one policy and one decision log; ``RoutedAnalyzer`` hands each frame to the
analyzer chosen by ``route(frame)`` and answers the loop as one analyzer does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._analyzer import Analysis, Analyzer, AnalyzerSettings, ModeSwitch
from ._sources import LiveFrame

__all__ = ["RoutedAnalyzer", "route_by_index"]


@dataclass(frozen=True)
class _RoutedTicket:
    name: str
    inner: Any


def route_by_index(key: str, when_set: str, otherwise: str) -> Callable[[LiveFrame], str]:
    """A route by the frame's event index: ``when_set`` where ``index[key]`` is non-zero
    (e.g. ``a``: an autofocus frame), else ``otherwise``."""

    def route(frame: LiveFrame) -> str:
        index = frame.header.event.get("index", {}) or {}
        return when_set if index.get(key, 0) else otherwise

    return route


class RoutedAnalyzer:
    """Analyzers by name and the route that picks one per frame; ``primary`` sets the
    deadline the loop's budget defaults to."""

    def __init__(
        self, analyzers: Mapping[str, Analyzer], route: Callable[[LiveFrame], str], primary: str
    ) -> None:
        if primary not in analyzers:
            raise ValueError(f"primary analyzer {primary!r} is not one of {sorted(analyzers)}")
        self.analyzers = dict(analyzers)
        self.route = route
        self.primary = primary

    @property
    def settings(self) -> AnalyzerSettings:
        return self.analyzers[self.primary].settings

    @property
    def switches(self) -> list[ModeSwitch]:
        out = [s for a in self.analyzers.values() for s in a.switches]
        return sorted(out, key=lambda s: s.t_ns)

    def warm_up(self, shape: tuple[int, int], *, timeout_s: float = 60.0) -> float:
        """Every analyzer's workers and local model, in turn (``Analyzer.warm_up``)."""
        return sum(a.warm_up(shape, timeout_s=timeout_s) for a in self.analyzers.values())

    def submit(self, frame: LiveFrame) -> _RoutedTicket:
        name = self.route(frame)
        if name not in self.analyzers:
            raise ValueError(f"frame {frame.index} routed to {name!r}, not one of the analyzers")
        return _RoutedTicket(name, self.analyzers[name].submit(frame))

    def ready(self, ticket: _RoutedTicket) -> bool:
        return self.analyzers[ticket.name].ready(ticket.inner)

    def wait(self, ticket: _RoutedTicket) -> Analysis:
        return self.analyzers[ticket.name].wait(ticket.inner)

    def close(self) -> None:
        for analyzer in self.analyzers.values():
            analyzer.close()
