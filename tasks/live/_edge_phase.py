"""One phase of a live experiment against an edge agent, wired the same way for every flow:
the phase's frames from the edge stream, the analyzer, the policy, the command sink with the
phase's deterministic ids, and the decision log next to the run's data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tasks.decisions import Policy
from tasks.hardware import EdgeClient, Transport
from tasks.inference import InferenceBackend

from ._analyzer import Analyzer, AnalyzerSettings
from ._decision_log import DecisionLog
from ._loop import LoopSettings, run_loop
from ._report import LoopReport
from ._routed import RoutedAnalyzer
from ._sink import CommandSink
from ._sources import EdgeStreamSource, FrameSource

__all__ = ["FALLBACK_OPTIONS", "analyzer_for", "local_model_choice", "run_edge_phase"]

# A fallback decides when the workers are late: it must be quick and still find the cell. At
# full resolution the classical model is slower and splits 20x nuclei into fragments (tracking
# seed 3, classical model alone: 0.75 of time points centred vs 1.0 binned to a 4 px radius).
FALLBACK_OPTIONS: dict[str, dict[str, Any]] = {"classical": {"working_radius_px": 4.0}}


def local_model_choice(
    model: str, options: Mapping[str, Any], fallback_model: str | None, *, remote: bool
) -> tuple[str | None, dict[str, Any]]:
    """The model this process runs: the model itself without remote workers, else the
    fallback beside them (with the model's options when it is the same model, else the
    fallback's own from ``FALLBACK_OPTIONS``)."""
    if not remote:
        return model, dict(options)
    if fallback_model is None:
        return None, {}
    if fallback_model == model:
        return fallback_model, dict(options)
    return fallback_model, dict(FALLBACK_OPTIONS.get(fallback_model, {}))


def analyzer_for(
    backend: InferenceBackend | None,
    *,
    deadline_ms: float | None = None,
    local_model: str | None = None,
    local_options: Mapping[str, Any] | None = None,
) -> Analyzer:
    """Remote workers (two frames in flight each) under ``deadline_ms`` with the local model
    as fallback; without workers the local model decides every frame, with no deadline."""
    return Analyzer(
        backend,
        AnalyzerSettings(
            deadline_ms=deadline_ms if backend is not None else None,
            max_in_flight=2 * (backend.config.workers if backend is not None else 1),
            fallback_model=local_model,
            fallback_options=dict(local_options or {}),
        ),
    )


def run_edge_phase(
    edge: EdgeClient,
    analyzer: Analyzer | RoutedAnalyzer,
    policy: Policy[Any],
    *,
    run_id: str,
    phase: str,
    decisions_path: Path,
    first_frame: int,
    transport: Transport = "auto",
    select: Callable[[FrameSource], FrameSource] | None = None,
    settings: LoopSettings | None = None,
) -> LoopReport:
    """Run ``policy`` over the phase's frames (from ``first_frame``, or where a crashed run's
    decision log ends) until it is done; closes the analyzer, the sink and the log.
    ``select`` narrows the stream (e.g. one frame per position)."""
    try:
        state = edge.state()
        analyzer.warm_up((state.image_height, state.image_width))
        sink = CommandSink(edge, run_id=run_id, phase=phase)
        log = DecisionLog(decisions_path, run_id=run_id, phase=phase, first_frame=first_frame)
        try:
            source: FrameSource = EdgeStreamSource(
                edge, start=log.first_frame, command_prefix=sink.prefix, transport=transport
            )
            if select is not None:
                source = select(source)
            return run_loop(source, analyzer, policy, sink, log, settings)
        finally:
            sink.close()
            log.close()
    finally:
        analyzer.close()
