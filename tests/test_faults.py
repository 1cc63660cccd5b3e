"""Faults on real processes: an edge killed with SIGKILL and restarted, a device that hangs,
stream connections cut, stream clients that leave, SIGTERM.

Every edge here is a real ``scopeflow edge serve --simulate`` child process on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import useq

from scopeflow import CommandDone, EventFailed, Frame, checksum
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.storage import FrameJournal

from ._proxy import CuttableProxy
from .conftest import validate_store

SMALL = ["--camera-size", "64"]


def _token(edge: EdgeProcess) -> str:
    return edge.token_file.read_text().strip()


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(poll)


def _inject_faults(edge: EdgeProcess, **faults: int) -> None:
    response = httpx.post(
        f"{edge.url}/v1/sim/faults",
        json=faults,
        headers={"Authorization": f"Bearer {_token(edge)}"},
    )
    assert response.status_code == 200, response.text


def _journal_frames(root: Path) -> list[dict]:
    """Every frame of a journal, read back and checked against its checksum."""
    metas = []
    with FrameJournal.open(root) as journal:
        for index in range(len(journal)):
            meta = journal.read_meta(index)["meta"]
            assert checksum(journal.read(index)) == meta["checksum"], f"frame {index} corrupt"
            metas.append(meta)
    return metas


# the edge killed with SIGKILL mid-acquisition, restarted on the same data dir -------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_an_edge_killed_mid_acquisition_reports_the_lost_work_after_a_restart(
    tmp_path: Path, seed: int
) -> None:
    data_dir = tmp_path / "edge"
    n = 60
    cid = f"killed-{seed}-{uuid.uuid4().hex[:6]}"
    sequence = {
        "channels": [{"config": "DAPI", "exposure": 5.0}],
        "time_plan": {"interval": 0.05, "loops": n},
    }
    first = EdgeProcess(data_dir, extra_args=[*SMALL, "--seed", str(seed)]).start()
    try:
        with EdgeClient(first.url, token_file=first.token_file) as client:
            ack = client.submit_sequence(sequence, command_id=cid, tag="doomed")
            assert ack.queued_events == n and not ack.repeat
            kill_after = 10 + 7 * seed  # a different moment for each seed
            _wait_for(lambda: client.state().frames_journaled >= kill_after, 30, "frames")
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            first.stop()  # reaps it
    finally:
        first.stop()
    old_journal = first.journal

    second = EdgeProcess(data_dir, extra_args=[*SMALL, "--seed", str(seed)]).start()
    try:
        assert second.journal != old_journal  # a new session
        with EdgeClient(second.url, token_file=second.token_file) as client:
            # every frame journaled before the kill reads back with its checksum
            metas = _journal_frames(old_journal)
            mine = [m for m in metas if m["command_id"] == cid]
            assert len(mine) == len(metas) >= kill_after
            with FrameJournal.open(old_journal) as journal:
                stores = journal.stores
            for store in stores:
                validate_store(store)

            status = client.command_status(cid)
            assert status.state == "interrupted" and status.done is None
            assert status.events == n and status.session != client.info()["session"]
            assert status.ran is not None and status.ran + status.not_run == n
            # "ran" is written after the frames are journaled: the kill may fall in between
            assert status.ran <= len(mine) <= status.ran + 1
            assert status.not_run >= n - len(mine) - 1 > 0

            # a repeat of the id: the stored acknowledgement and the truth about its work
            again = client.submit_sequence(sequence, command_id=cid, tag="doomed")
            assert again.repeat and again.queued_events == n
            assert again.work is not None and again.work.state == "interrupted"
            assert again.work.not_run == status.not_run
            assert f"{status.not_run} were NOT run" in again.detail
            assert "new command id" in again.detail

            # nothing was resumed behind the user's back; the edge works
            time.sleep(0.5)
            assert client.state().frames_journaled == 0
            fresh = client.submit_events([useq.MDAEvent(channel="DAPI", exposure=5)] * 3)
            assert client.wait_until_idle().frames_journaled == 3
            assert client.command_status(fresh.command_id).state == "done"
    finally:
        second.stop()
    # the restart settled the crash once: a third start reports the same, not again as new
    third = EdgeProcess(data_dir, extra_args=SMALL).start()
    try:
        with EdgeClient(third.url, token_file=third.token_file) as client:
            assert client.command_status(cid) == status
            done = client.command_status(fresh.command_id)
            assert done.state == "done" and done.done is not None and done.done.frames == 3
    finally:
        assert third.stop() == 0, "\n".join(third.stderr_lines[-40:])


def test_a_clean_stop_reports_the_dropped_events_as_stopped_not_interrupted(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "edge"
    cid = f"stopped-{uuid.uuid4().hex[:6]}"
    sequence = {"channels": ["DAPI"], "time_plan": {"interval": 0.1, "loops": 200}}
    edge = EdgeProcess(data_dir, extra_args=SMALL).start()
    with EdgeClient(edge.url, token_file=edge.token_file) as client:
        client.submit_sequence(sequence, command_id=cid)
        _wait_for(lambda: client.state().frames_journaled >= 3, 30, "frames")
    assert edge.stop(sig=signal.SIGTERM) == 0, "\n".join(edge.stderr_lines[-20:])
    again = EdgeProcess(data_dir, extra_args=SMALL).start()
    try:
        with EdgeClient(again.url, token_file=again.token_file) as client:
            status = client.command_status(cid)
            assert status.state == "done" and status.done is not None
            assert status.done.outcome == "stopped"
            assert status.done.frames + status.done.dropped == 200 and status.done.dropped > 0
            ack = client.submit_sequence(sequence, command_id=cid)
            assert ack.repeat and "stopped" in ack.detail and ack.work == status
    finally:
        again.stop()


# stream clients that leave, SIGTERM -------------------------------------------------------------


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_stream_threads_of_clients_that_left_are_released(tmp_path: Path) -> None:
    with EdgeProcess(tmp_path / "edge", extra_args=SMALL) as edge:
        assert edge.pid is not None
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            client.submit_events([useq.MDAEvent(channel="DAPI", exposure=5)] * 2)
            client.wait_until_idle()
            time.sleep(0.5)
            baseline = _threads(edge.pid)
            token = _token(edge)
            for round_ in range(3):
                socks = []
                for _ in range(25):  # idle streams (waiting for frame 2, which never comes)
                    sock = socket.create_connection(("127.0.0.1", edge.stream_port), timeout=10)
                    sock.sendall(json.dumps({"token": token, "from": 2}).encode() + b"\n")
                    assert b'"ok":true' in sock.recv(4096).replace(b" ", b"")
                    socks.append(sock)
                _wait_for(lambda: _threads(edge.pid) >= baseline + 25, 10, "handler threads")
                for sock in socks:
                    sock.close()
                _wait_for(lambda: _threads(edge.pid) <= baseline, 10, f"release ({round_})")
            # the edge still serves a stream
            client.submit_events([useq.MDAEvent(channel="DAPI", exposure=5)])
            frame = next(iter(client.frames(2, stop=3, transport="tcp", verify=True)))
            assert frame.index == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_acquisition_shuts_down_cleanly(tmp_path: Path, sig: int) -> None:
    """SIGTERM (what systemd, Kubernetes and Slurm send) does what Ctrl-C does: every frame
    taken is journaled, the unrun events are reported as dropped, exit code 0."""
    data_dir = tmp_path / "edge"
    edge = EdgeProcess(data_dir, extra_args=SMALL).start()
    sequence = {"channels": ["DAPI"], "time_plan": {"interval": 0.05, "loops": 500}}
    with EdgeClient(edge.url, token_file=edge.token_file) as client:
        client.submit_sequence(sequence, command_id="signalled")
        _wait_for(lambda: client.state().frames_journaled >= 5, 30, "frames")
    assert edge.stop(sig=sig) == 0, "\n".join(edge.stderr_lines[-20:])
    assert any('"event": "stopped"' in line for line in edge.stderr_lines)
    metas = _journal_frames(edge.journal)
    with FrameJournal.open(edge.journal) as journal:
        for store in journal.stores:
            validate_store(store)
    queue_log = (data_dir / "queue.jsonl").read_text()
    assert '"end": true' in queue_log.splitlines()[-1]  # a clean end: nothing to settle
    assert f'"frames": {len(metas)}' in queue_log  # the CommandDone: every frame accounted


# the stream connection cut 10 times in a 1,000-frame run ----------------------------------------


def _stream_until_done(client: EdgeClient, cid: str, on_frame=None) -> list:
    """Every frame and notice from 0 to ``cid``'s CommandDone, as comparable tuples."""
    seen: list = []
    for message in client.frames(0, transport="tcp", verify=True, notices=True):
        if isinstance(message, Frame):
            seen.append(("frame", message.index, message.header.checksum, message.header.tag))
            if on_frame is not None:
                on_frame(len([s for s in seen if s[0] == "frame"]))
        else:
            seen.append((message.type, message.position, message.command_id))
            if isinstance(message, CommandDone) and message.command_id == cid:
                return seen
    raise AssertionError("the stream ended before the command did")


def test_a_1000_frame_run_loses_and_repeats_nothing_when_its_stream_is_cut_10_times(
    tmp_path: Path,
) -> None:
    n, cuts_at = 1000, set(range(50, 1000, 100))
    with (
        EdgeProcess(tmp_path / "edge", extra_args=SMALL) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        _inject_faults(edge, snap=1)  # a notice in the run too (skipped event 0)
        cid = "cut-run"
        client.submit_events(
            [useq.MDAEvent(channel="DAPI", exposure=1)] * n, command_id=cid, on_error="skip"
        )
        undisturbed: list = []
        reader = threading.Thread(
            target=lambda: undisturbed.extend(_stream_until_done(client, cid)), daemon=True
        )
        reader.start()
        proxy = CuttableProxy(edge.stream_port)
        try:
            with EdgeClient(edge.url, token_file=edge.token_file) as cut_client:
                cut_client._stream_port = proxy.port  # the stream goes through the proxy

                def cut(frames: int) -> None:
                    if frames in cuts_at:
                        proxy.cut()

                disturbed = _stream_until_done(cut_client, cid, on_frame=cut)
                assert proxy.connections == 1 + len(cuts_at)  # every cut was resumed
        finally:
            proxy.close()
        reader.join(60)
        assert not reader.is_alive()
    frames = [s for s in disturbed if s[0] == "frame"]
    assert [f[1] for f in frames] == list(range(n - 1))  # 0 lost, 0 repeated (1 skipped)
    assert disturbed == undisturbed  # same frames, same checksums, same notices in place
    assert [s[0] for s in disturbed if s[0] != "frame"] == ["event_failed", "command_done"]


# a device that never finishes its move: the core's wait times out ------------------------------

CORE_TIMEOUT_S = 5.0  # Micro-Manager's default device timeout (CMMCore.getTimeoutMs)


def _notices_until_done(client: EdgeClient, start: int, cid: str, t0: float) -> list:
    """(s since ``t0``, message, wall clock ns when it came) up to ``cid``'s CommandDone."""
    out: list = []
    for message in client.frames(start, transport="tcp", notices=True):
        out.append((time.monotonic() - t0, message, time.time_ns()))
        if isinstance(message, CommandDone) and message.command_id == cid:
            return out
    raise AssertionError("the stream ended before the command did")


def test_a_stage_that_hangs_times_out_and_the_failure_reaches_the_client_at_once(
    tmp_path: Path,
) -> None:
    with (
        EdgeProcess(tmp_path / "edge", extra_args=SMALL) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        here = client.state().stage
        moves = [
            useq.MDAEvent(x_pos=here.x + dx, y_pos=here.y, channel="DAPI", exposure=2)
            for dx in (0.0, 40.0)
        ]
        # skip: the hung event fails after one timeout, the next one runs
        _inject_faults(edge, hang=1)
        t0 = time.monotonic()
        ack = client.submit_events(moves, command_id="hang-skip", on_error="skip")
        seen: list = []
        reader = threading.Thread(
            target=lambda: seen.extend(_notices_until_done(client, 0, "hang-skip", t0)),
            daemon=True,
        )
        reader.start()
        time.sleep(1.0)  # mid-hang: the edge answers, says what it is doing
        with httpx.Client(timeout=2.0) as http:
            assert http.get(f"{edge.url}/healthz").status_code == 200
        assert client.state().run_state == "acquiring"
        reader.join(CORE_TIMEOUT_S + 10)
        assert not reader.is_alive(), "the command never ended: something hangs"
        (t_failed, failed, came_ns), (_, frame, _), (_, done, _) = seen
        assert isinstance(failed, EventFailed) and isinstance(frame, Frame)
        assert (failed.step, failed.device, failed.action, failed.attempts) == (
            "setup", "XY", "skipped", 1,
        )  # fmt: skip
        assert "timed out" in failed.error and "'XY'" in failed.fix
        assert "new command id" in failed.fix
        # the core gave up after its timeout; the client heard of it within a second
        assert t_failed >= CORE_TIMEOUT_S
        assert (came_ns - failed.t_ns) / 1e9 < 1.0
        assert frame.header.stage.x == pytest.approx(here.x + 40.0)
        assert (done.outcome, done.frames, done.failed) == ("partial", 1, 1)

        # retry: the second attempt moves, nothing is lost
        _inject_faults(edge, hang=1)
        start = client.state().frames_journaled
        t0 = time.monotonic()
        ack = client.submit_events(moves, command_id="hang-retry", on_error="retry:1")
        retried = [
            (t, m)
            for t, m, _ in _notices_until_done(client, ack.stream_from, "hang-retry", t0)
            if (m.header.command_id if isinstance(m, Frame) else m.command_id) == "hang-retry"
        ]
        kinds = [type(m).__name__ for _, m in retried]
        assert kinds == ["Frame", "Frame", "CommandDone"], kinds
        assert retried[-1][1].outcome == "completed"
        assert [m.index for _, m in retried[:2]] == [start, start + 1]
        assert client.wait_until_idle().last_error is None


# device errors reaching the closed loop (what a flow's live phase runs) -------------------------


class _Timed:
    """A frame source that notes when each notice reached the loop (wall clock, ns)."""

    def __init__(self, source) -> None:
        self._source = source
        self.notices: list[tuple[int, object]] = []

    def frames(self):
        for item in self._source.frames():
            if isinstance(item, EventFailed | CommandDone):
                self.notices.append((time.time_ns(), item))
            yield item

    def stop(self) -> None:
        self._source.stop()


@pytest.mark.parametrize(
    ("fault", "device", "words"),
    [("snap", "Camera", "camera"), ("stage", "XY", "stage"), ("hang", "XY", "timed out")],
)
def test_a_device_error_reaches_the_loop_within_a_second_and_nothing_hangs(
    tmp_path: Path, fault: str, device: str, words: str
) -> None:
    from tasks.decisions import TrackingPolicy, TrackingRules
    from tasks.live import (
        Analyzer,
        AnalyzerSettings,
        CommandSink,
        DecisionLog,
        EdgeStreamSource,
        LoopSettings,
        run_loop,
    )

    with (
        EdgeProcess(tmp_path / "edge", extra_args=["--camera-size", "128"]) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        here = client.state().stage
        rules = TrackingRules(time_points=4, interval_s=0.3, channel="DAPI", exposure_ms=5.0)
        policy = TrackingPolicy([("p", here.x + 30.0, here.y)], rules)
        # the default policy tries once more: two failures exhaust it
        _inject_faults(edge, **{fault: 2})
        run_id = f"fault-{fault}"
        sink = CommandSink(client, run_id=run_id, phase="track")
        log = DecisionLog(tmp_path / "decisions.jsonl", run_id=run_id, phase="track", first_frame=0)
        analyzer = Analyzer(None, AnalyzerSettings(fallback_model="classical"))
        source = _Timed(EdgeStreamSource(client, start=0, command_prefix=sink.prefix))
        finished: list = []

        def loop() -> None:
            try:
                finished.append(
                    run_loop(source, analyzer, policy, sink, log, LoopSettings(frame_timeout_s=30))
                )
            except BaseException as exc:
                finished.append(exc)

        runner = threading.Thread(target=loop, daemon=True)
        runner.start()
        runner.join(2 * CORE_TIMEOUT_S + 30)
        analyzer.close()
        sink.close()
        log.close()
        assert not runner.is_alive(), "the loop hangs after a device error"
        (report,) = finished
        assert not isinstance(report, BaseException), report
        failed = [(t, n) for t, n in source.notices if isinstance(n, EventFailed)]
        assert failed, "the failure never reached the loop"
        t_seen, notice = failed[0]
        assert notice.device == device and words in notice.error.lower()
        assert device in notice.fix and "new command id" in notice.fix
        assert (notice.attempts, notice.action) == (2, "aborted")  # the policy applied
        assert (t_seen - notice.t_ns) / 1e9 < 1.0  # from the failure to the loop
        assert notice in report.failures
        logged = [r for r in DecisionLog.read(tmp_path / "decisions.jsonl")]
        assert any(r.get("type") == "event_failed" for r in logged)
        assert client.wait_until_idle().last_error is None  # one command failed, not the edge
