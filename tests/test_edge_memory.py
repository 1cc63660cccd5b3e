"""The edge agent's memory does not grow with a session's frames or commands.

A real agent in this process (simulated core, journal, journal and acquisition threads: its
in-memory structures are what is checked, so it cannot run as a child process), with small
windows so that a short session goes far past them: the journal index, the running commands,
the queue log's open commands and the notices in memory are the same size after the first
commands as after three times as many, while every frame, notice and command answer stays
reachable (from disk) exactly as before, also after a restart on the same data dir.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from scopeflow import CommandDone, EdgeServerSettings, Frame, SubmitSequence
from tasks.hardware import EdgeAgent, SafetyEnvelope
from tasks.hardware.sim import SimulatorConfig, build_simulated_core

WINDOW = 8  # journal locations kept in memory
NOTICES = 4  # notices kept in memory


def _agent(data_dir: Path) -> EdgeAgent:
    core, _ = build_simulated_core(SimulatorConfig(width=32, height=32, time_scale=0))
    settings = EdgeServerSettings(
        data_dir=data_dir,
        journal_index_window=WINDOW,
        notice_window=NOTICES,
        journal_prewrite=0,
        shm_slots=0,
        ring_mib=16,
    )
    agent = EdgeAgent(core, settings, SafetyEnvelope(), simulated=True)
    agent.start()
    return agent


def _submit(agent: EdgeAgent, command_id: str, events: int) -> None:
    sequence = {
        "channels": [{"config": "DAPI", "exposure": 1.0}],
        "time_plan": {"interval": 0, "loops": events},
    }
    ack = agent.submit_sequence(SubmitSequence(command_id=command_id, sequence=sequence))
    assert not ack.repeat and ack.queued_events == events


def _wait_done(agent: EdgeAgent, command_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = agent.command_status(command_id)
        if status is not None and status.state == "done":
            return
        time.sleep(0.02)
    raise AssertionError(
        f"{command_id} not done in {timeout} s: {agent.command_status(command_id)}"
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_memory_stays_bounded_and_everything_stays_reachable(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(1, 7, size=36)]
    agent = _agent(tmp_path / "edge")
    try:
        footprints = []
        for k, n in enumerate(sizes):
            _submit(agent, f"m{k}", n)
            _wait_done(agent, f"m{k}")
            if k + 1 in (12, 36):
                footprints.append(agent.memory_footprint())
        frames = sum(sizes)
        assert agent.hub.count == frames > 3 * WINDOW
        # bounded: the same after 12 commands as after 36 (all far past the windows)
        assert footprints[0] == footprints[1], footprints
        assert footprints[1]["command_runs"] == footprints[1]["open_commands"] == 0
        assert footprints[1]["notices_in_memory"] == NOTICES

        # every frame and notice from the start, as a resuming stream reads them
        owners = [f"m{k}" for k, n in enumerate(sizes) for _ in range(n)]
        index, cursor, got_frames, got_done = 0, agent.hub.notice_cursor(0), 0, []
        while index < frames or cursor < len(sizes):
            message = agent.hub.next_message(index, cursor, timeout=5)
            assert message is not None
            if isinstance(message, Frame):
                assert message.header.index == index
                assert message.header.command_id == owners[index]
                index += 1
                got_frames += 1
            else:
                assert isinstance(message, CommandDone) and message.position <= index
                got_done.append((message.command_id, message.frames, message.position))
                cursor += 1
        assert got_frames == frames
        positions = np.cumsum(sizes).tolist()
        assert got_done == [
            (f"m{k}", n, p) for k, (n, p) in enumerate(zip(sizes, positions, strict=True))
        ]
        assert agent.hub.notice_cursor(positions[20]) == 20  # a stream from an old frame

        # a finished command's answers, from disk, as the running agent gave them
        for k in (0, 17, 35):
            status = agent.command_status(f"m{k}")
            assert status is not None and status.state == "done" and status.ran is None
            assert status.events == sizes[k] and status.session == agent.session_id
            assert status.done is not None and status.done.outcome == "completed"
            repeat = agent.submit_sequence(
                SubmitSequence(
                    command_id=f"m{k}",
                    sequence={
                        "channels": [{"config": "DAPI", "exposure": 1.0}],
                        "time_plan": {"interval": 0, "loops": sizes[k]},
                    },
                )
            )
            assert repeat.repeat and repeat.work == status
            assert f"{sizes[k]} of its {sizes[k]} events ran" in repeat.detail
        session = agent.session_id
    finally:
        agent.shutdown()
        agent.core.unloadAllDevices()

    again = _agent(tmp_path / "edge")  # a new session on the same data dir
    try:
        status = again.command_status("m3")
        assert status is not None and status.session == session and status.ran == sizes[3]
        assert again.memory_footprint()["open_commands"] == 0
    finally:
        again.shutdown()
        again.core.unloadAllDevices()
