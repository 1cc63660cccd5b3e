"""The live loop on the edge's notices, against a real edge process: an acquisition whose snap
fails under ``skip`` is closed by its ``command_done`` (the loop does not wait for the missing
frame until ``LoopStalled``), and the failure is in the decision log and the report."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import useq

from tasks.decisions import Acquire, Decision, FrameView
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import (
    Analyzer,
    AnalyzerSettings,
    CommandSink,
    DecisionLog,
    EdgeStreamSource,
    LoopSettings,
    run_loop,
)


class _Shots:
    """Three snaps in one acquisition; each frame is decided and nothing more is asked."""

    events = tuple(
        useq.MDAEvent(channel="DAPI", exposure=5, index={"t": t}, metadata={"on_error": "skip"})
        for t in range(3)
    )

    def initial_state(self) -> int:
        return 0

    def first_commands(self, state: int) -> tuple[Acquire, ...]:
        return (Acquire("shots", self.events),)

    def decide(self, state: int, frame: FrameView, result: Any) -> tuple[int, Decision]:
        return state + 1, Decision(summary={"t": frame.event_index.get("t")})


def test_a_snap_failing_under_skip_does_not_stall_the_loop_and_is_recorded(
    edge: EdgeProcess, client: EdgeClient, tmp_path: Path
) -> None:
    run_id, phase = f"live-{uuid.uuid4().hex[:8]}", "shots"
    response = httpx.post(
        f"{edge.url}/v1/sim/faults",
        json={"snap": 1},
        headers={"Authorization": f"Bearer {edge.token_file.read_text().strip()}"},
    )
    assert response.status_code == 200
    sink = CommandSink(client, run_id=run_id, phase=phase)
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, run_id=run_id, phase=phase, first_frame=client.state().frames_journaled)
    source = EdgeStreamSource(client, start=log.first_frame, command_prefix=sink.prefix)
    analyzer = Analyzer(None, AnalyzerSettings(fallback_model="classical"))
    settings = LoopSettings(frame_timeout_s=120.0)  # the stall would take this long
    t0 = time.monotonic()
    try:
        report = run_loop(source, analyzer, _Shots(), sink, log, settings)
    finally:
        sink.close()
        log.close()
        analyzer.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 60.0, f"the loop took {elapsed:.1f} s: it waited for the skipped frame"

    assert report.frames == 2 and report.state == 2
    [failed] = report.failures
    assert (failed.command_id, failed.event_number, failed.action) == (
        f"{sink.prefix}shots",
        0,
        "skipped",
    )
    assert failed.device == "Camera" and "Camera" in report.markdown()
    records = DecisionLog.read(path)
    kinds = [r["type"] for r in records]
    assert kinds.count("decision") == 2
    assert kinds.index("event_failed") < kinds.index("decision")  # in stream order
    [done] = [r for r in records if r["type"] == "command_done"]
    assert (done["outcome"], done["frames"], done["failed"]) == ("partial", 2, 1)
    assert records[-1]["type"] == "end" and len(records[-1]["failures"]) == 1
