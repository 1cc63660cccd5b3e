"""The file-drop driver: a real edge process whose microscope is the reference macro
(examples/zen_oad_macro.py) answering through files, with the simulator behind it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile

from scopeflow import (
    CommandDone,
    ConfigurationError,
    EdgeClientError,
    EdgeRejected,
    EventFailed,
    Frame,
    HardwareError,
    MoveStage,
    Stop,
)
from tasks.hardware import EdgeClient, EdgeProcess, FileDropBridge, edge_openapi
from tasks.hardware.sim import SimulatorConfig

from .conftest import REPO
from .filedrop_driver import MacroThread, load_macro

CAMERA = 256


@pytest.fixture(scope="module")
def dropped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeProcess, MacroThread]]:
    drop = tmp_path_factory.mktemp("drop")
    config = SimulatorConfig(seed=3, width=CAMERA, height=CAMERA)
    with (
        MacroThread(drop, config) as macro,
        EdgeProcess(
            tmp_path_factory.mktemp("fd-edge"),
            extra_args=["--driver", "file-drop", "--drop-dir", str(drop)],
        ) as edge,
    ):
        yield edge, macro


@pytest.fixture()
def client(dropped: tuple[EdgeProcess, MacroThread]) -> Iterator[EdgeClient]:
    edge, _ = dropped
    with EdgeClient(edge.url, token_file=edge.token_file) as c:
        c.wait_until_idle()
        yield c


def _commands(macro: MacroThread) -> list[dict]:
    folder = Path(macro.macro.commands)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _until_done(client: EdgeClient, start: int, command_id: str) -> list:
    seen = []
    for item in client.frames(start, notices=True):
        seen.append(item)
        if isinstance(item, CommandDone) and item.command_id == command_id:
            return seen
    raise AssertionError("stream ended")


def test_frames_come_from_the_macro_journaled_and_named_by_their_command(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    state = client.state()
    assert not state.simulated and state.image_width == CAMERA
    positions = [(4_000.0, 4_100.0), (4_200.0, 4_050.0), (4_400.0, 4_300.0)]
    events = [
        {"x_pos": x, "y_pos": y, "z_pos": 1.0, "channel": "DAPI", "exposure": 15, "index": {"p": i}}
        for i, (x, y) in enumerate(positions)
    ]
    command_id = f"fd-{uuid.uuid4().hex[:8]}"
    ack = client.submit_events(events, command_id=command_id, tag="tiles")
    seen = _until_done(client, ack.stream_from, command_id)
    frames = [f for f in seen if isinstance(f, Frame)]
    assert [(f.header.stage.x, f.header.stage.y) for f in frames] == positions
    assert {f.header.command_id for f in frames} == {command_id}
    assert {f.header.tag for f in frames} == {"tiles"}
    assert seen[-1].outcome == "completed" and seen[-1].frames == 3
    # one acquire file per event, each naming the command and the event; the image on disk is
    # the frame the edge streamed
    acquires = [c for c in _commands(macro) if c.get("command_id") == command_id]
    assert [(c["op"], c["event"]) for c in acquires] == [
        ("acquire", 0),
        ("acquire", 1),
        ("acquire", 2),
    ]
    assert all(c["channel"] == "DAPI" and c["exposure_ms"] == 15 for c in acquires)
    for command, frame in zip(acquires, frames, strict=True):
        on_disk = tifffile.imread(Path(macro.macro.images) / f"{command['seq']:06d}.tif")
        np.testing.assert_array_equal(on_disk, frame.pixels)
        assert client.frame(frame.index).header.command_id == command_id  # journal read-back


def test_a_repeated_command_id_writes_no_second_file(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    command_id = f"fd-once-{uuid.uuid4().hex[:8]}"
    event = [{"x_pos": 5_000.0, "y_pos": 5_000.0, "channel": "DAPI", "exposure": 10}]
    first = client.submit_events(event, command_id=command_id)
    client.wait_until_idle()
    again = client.submit_events(event, command_id=command_id)
    client.wait_until_idle()
    assert not first.repeat and again.repeat
    assert len([c for c in _commands(macro) if c.get("command_id") == command_id]) == 1
    move_id = f"fd-move-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        client.command(MoveStage(x=5_100.0, y=5_200.0), command_id=move_id)
    moves = [c for c in _commands(macro) if c.get("command_id") == move_id]
    assert [(c["op"], c["x"], c["y"]) for c in moves] == [("move", 5_100.0, 5_200.0)]
    assert (client.state().stage.x, client.state().stage.y) == (5_100.0, 5_200.0)


def test_the_envelope_refuses_before_any_file_is_written(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    before = len(_commands(macro))
    with pytest.raises(EdgeRejected, match="x_limits_um"):
        client.command(MoveStage(x=50_000.0, y=10.0))
    with pytest.raises(EdgeRejected, match="allowed_channels"):
        client.submit_events([{"x_pos": 10.0, "y_pos": 10.0, "channel": "Cy5"}])
    assert len(_commands(macro)) == before


def test_a_macro_failure_is_the_events_failure_and_the_edge_goes_on(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    macro.adapter.fail_next = "ZEN: camera not ready"
    command_id = f"fd-fail-{uuid.uuid4().hex[:8]}"
    events = [{"x_pos": 3_000.0 + 50 * i, "y_pos": 3_000.0, "channel": "DAPI"} for i in range(2)]
    ack = client.submit_events(events, command_id=command_id, on_error="skip")
    seen = _until_done(client, ack.stream_from, command_id)
    failed = [m for m in seen if isinstance(m, EventFailed)]
    assert len(failed) == 1 and "ZEN: camera not ready" in failed[0].error
    assert failed[0].event_number == 0
    assert seen[-1].outcome == "partial" and seen[-1].frames == 1


def test_a_refused_direct_command_names_the_macros_error(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    macro.adapter.fail_next = "ZEN: stage controller not referenced"
    with pytest.raises(EdgeClientError, match="stage controller not referenced"):
        client.command(MoveStage(x=4_000.0, y=4_000.0))
    client.command(MoveStage(x=4_010.0, y=4_000.0))  # the next one goes through
    assert client.state().stage.x == 4_010.0


def test_a_reply_naming_an_unannounced_channel_is_refused(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    macro.adapter.misreport = "Cy5"
    with pytest.raises(EdgeClientError, match="does not announce"):
        client.command(MoveStage(x=4_020.0, y=4_000.0))
    assert client.state().channel in {"BF", "DAPI", "GFP"}


def test_the_published_openapi_is_what_the_edge_serves(
    dropped: tuple[EdgeProcess, MacroThread],
) -> None:
    edge, _ = dropped
    published = json.loads((REPO / "docs" / "edge-openapi.json").read_text())
    assert published == edge_openapi()  # regenerate: scopeflow edge openapi > docs/...
    served = httpx.get(f"{edge.url}/openapi.json").json()
    assert served["paths"].keys() == published["paths"].keys() - {"/v1/sim/faults"}


def test_a_stop_reaches_the_macro(
    client: EdgeClient, dropped: tuple[EdgeProcess, MacroThread]
) -> None:
    _, macro = dropped
    events = [{"x_pos": 2_000.0 + 20 * i, "y_pos": 2_000.0, "channel": "DAPI"} for i in range(40)]
    client.submit_events(events)
    aborts = macro.adapter.aborts
    stop_id = f"fd-stop-{uuid.uuid4().hex[:8]}"
    client.command(Stop(), command_id=stop_id)
    state = client.wait_until_idle()
    assert state.queue_depth == 0
    stops = [c for c in _commands(macro) if c["op"] == "stop" and c["command_id"] == stop_id]
    assert len(stops) >= 1
    assert macro.adapter.aborts > aborts


# the bridge alone: what it refuses to read ------------------------------------------------


def test_the_bridge_never_reads_a_command_without_its_reply_and_checks_the_image(
    tmp_path: Path,
) -> None:
    bridge = FileDropBridge(tmp_path, poll_s=0.001, reply_timeout_s=0.2)
    with pytest.raises(HardwareError, match="did not answer"):
        bridge.send("move", x=1.0, y=2.0)
    # an image with no reply yet (the macro is still writing it) is never looked at; a reply
    # naming an image of the wrong size is refused with what the camera should give
    (tmp_path / "images" / "000002.tif").write_bytes(b"II*\x00 half")
    macro = load_macro()
    macro.write_atomic(
        str(tmp_path / "replies" / "000002.json"),
        {"protocol": 1, "seq": 2, "command_id": None, "ok": True, "image": "images/000002.tif"},
    )
    reply = bridge.send("acquire")
    with pytest.raises(HardwareError, match="complete TIFF"):
        bridge.read_image(reply, (4, 4), np.dtype(np.uint16))
    tifffile.imwrite(tmp_path / "images" / "000002.tif", np.zeros((3, 3), np.uint16))
    with pytest.raises(HardwareError, match="camera announced"):
        bridge.read_image(reply, (4, 4), np.dtype(np.uint16))
    bad = reply.model_copy(update={"image": "../outside.tif"})
    with pytest.raises(HardwareError, match="outside the drop folder"):
        bridge.read_image(bad, (4, 4), np.dtype(np.uint16))
    assert not list((tmp_path / "commands").glob("*.tmp"))


def test_a_restarted_bridge_never_reuses_a_file_name(tmp_path: Path) -> None:
    first = FileDropBridge(tmp_path, reply_timeout_s=0.01)
    with pytest.raises(HardwareError):
        first.send("move", x=1.0)
    second = FileDropBridge(tmp_path, reply_timeout_s=0.01)
    with pytest.raises(HardwareError):
        second.send("move", x=2.0)
    names = sorted(p.name for p in (tmp_path / "commands").iterdir())
    assert names == ["000001.json", "000002.json"]


def test_a_macro_of_another_protocol_is_refused_with_the_fix(tmp_path: Path) -> None:
    bridge = FileDropBridge(tmp_path)
    with pytest.raises(ConfigurationError, match="start the vendor macro"):
        bridge.wait_hello(0.05)
    (tmp_path / "hello.json").write_text(json.dumps({"protocol": 99}))
    with pytest.raises(HardwareError, match="not a valid DropHello"):
        bridge.wait_hello(1)


def test_the_reference_macro_stays_within_what_zen_oad_ironpython_runs() -> None:
    """IronPython 2.7: no f-strings, no annotations, no walrus, no pathlib; os, json, time only."""
    import ast

    tree = ast.parse((REPO / "examples" / "zen_oad_macro.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= {"os", "json", "time"}, imported
    for node in ast.walk(tree):
        assert not isinstance(node, ast.JoinedStr | ast.NamedExpr | ast.AnnAssign), node.lineno
        if isinstance(node, ast.FunctionDef):
            assert node.returns is None and not any(a.annotation for a in node.args.args)
        if isinstance(node, ast.ClassDef):
            assert [b.id for b in node.bases if isinstance(b, ast.Name)] == ["object"], node.name
