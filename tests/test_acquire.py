"""`scopeflow run acquire`: a user's useq MDASequence through a real simulated edge into OME-Zarr
images with the sequence's own axes, read back from the edge's journal.

The fixture is useq-schema's own test sequence (36,774 events: t, p, g, c, z, a sub-sequence
with its own grid and z plan, a channel every 3rd time point, one without a stack, hardware
autofocus before each channel). CI runs it cut to its first time points (every axis and rule
still used); the whole sequence runs in the slow test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import useq
import yaml
import zarr

from flows import (
    AcquireParams,
    AnalysisHook,
    FieldStores,
    FrameRecord,
    image_events,
    load_sequence,
    normalised_event,
    plan_fields,
    shorten_sequence,
)
from flows.acquire import acquire, prepare_acquisition
from scopeflow import ConfigurationError, JournalError
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.inference import BackendConfig
from tasks.storage import FrameJournal, ImageLayout, ImageWriter, axes_from_sizes, channels_named

from ._prefect_server import PrefectServer
from .conftest import REPO, shared_data, validate_store

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(600)]

ENVELOPE = REPO / "examples" / "acquire" / "envelope.yaml"
EXAMPLE = REPO / "examples" / "acquire" / "sequence.yaml"


def fixture_sequence() -> Path:
    return shared_data("useq_schema_fixtures", "mda.yaml")


def fixture_subset(tmp_path: Path, time_points: int = 4) -> Path:
    """The fixture with its time plan cut to ``time_points`` (>= 4 keeps DAPI's every-3rd)."""
    data = yaml.safe_load(fixture_sequence().read_text())
    data["time_plan"] = {"interval": 3.0, "loops": time_points}
    path = tmp_path / "mda_subset.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def validate_spec_schemas(store: Path) -> None:
    script = shared_data("ome_ngff_spec", "validate_store_with_spec_schemas.py")
    done = subprocess.run(
        [sys.executable, str(script), str(store), "--strict"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"spec schemas reject {store}:\n{done.stdout}{done.stderr}"
    assert "PASS" in done.stdout and "FAIL" not in done.stdout


def napari_layers(store: Path) -> list[tuple]:
    """napari-ome-zarr's reader, as napari calls it when a user opens the folder (headless:
    the reader needs napari's colormaps, not a window or Qt)."""
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(store))
    assert reader is not None, f"napari-ome-zarr does not recognise {store}"
    return reader(str(store))


@pytest.fixture(scope="module")
def sim_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """A simulated edge with a 64x64 camera whose envelope allows FITC and Cy5."""
    data_dir = tmp_path_factory.mktemp("acquire-edge")
    args = ["--camera-size", "64", "--envelope", str(ENVELOPE)]
    with EdgeProcess(data_dir, extra_args=args) as process:
        yield process


def params_for(edge: EdgeProcess, sequence: Path, out: Path, **extra: object) -> AcquireParams:
    return AcquireParams(
        sequence=sequence,
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=out,
        **extra,
    )


def progress_shown(run_dir: Path) -> float:
    """The progress artifact of the flow run whose folder is ``run_dir`` (``acquire-<id>``)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    flow_run_id = UUID(run_dir.name.removeprefix("acquire-"))
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["acquire-progress"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    assert artifact.type == "progress"
    return float(artifact.data)


def journal_frames(journal: Path, command_id: str) -> list[int]:
    with FrameJournal.open(journal) as j:
        return [i for i in range(len(j)) if j.read_meta(i)["meta"].get("command_id") == command_id]


# -- reading a sequence ------------------------------------------------------------------------


def test_malformed_and_unknown_fields_are_refused_with_the_fix(tmp_path: Path) -> None:

    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  - config: DAPI\n   exposure: 10\n")
    with pytest.raises(ConfigurationError, match=r"not valid YAML/JSON at line 3"):
        load_sequence(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("chanels: [DAPI]\ntime_plan: {interval: 1, loops: 2}\n")
    with pytest.raises(
        ConfigurationError, match=r"unknown field 'chanels'.*did you mean 'channels'"
    ):
        load_sequence(typo)
    nested = tmp_path / "nested.yaml"
    nested.write_text(
        "stage_positions:\n  - x: 1\n    y: 2\n"
        "    sequence: {z_plan: {range: 2, step: 1, go_upp: true}}\n"
    )
    with pytest.raises(
        ConfigurationError, match=r"'go_upp' in stage_positions.0.sequence.z_plan.*'go_up'"
    ):
        load_sequence(nested)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("channels: [{config: DAPI, exposure: short}]\n")
    with pytest.raises(
        ConfigurationError, match=r"MDASequence: channels.exposure: Input should be a valid number"
    ):
        load_sequence(wrong)
    with pytest.raises(ConfigurationError, match=r"cannot read the sequence file"):
        load_sequence(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- DAPI\n")
    with pytest.raises(ConfigurationError, match=r"not a mapping"):
        load_sequence(tmp_path / "list.yaml")
    assert load_sequence(EXAMPLE).sizes  # the README's example is valid


def test_fast_keeps_every_event_but_the_waits() -> None:

    original = load_sequence(fixture_sequence())
    fast = shorten_sequence(original, 1.0)
    a, b = list(original), list(fast)
    assert len(a) == len(b) == 36774
    for x, y in zip(a, b, strict=True):
        keep = {"sequence", "min_start_time", "exposure"}
        assert x.model_dump(exclude=keep) == y.model_dump(exclude=keep)
        assert y.min_start_time == 0.0
        assert y.exposure is None or y.exposure <= 1.0
    assert max(e.min_start_time or 0 for e in a) == 2406.0


def test_fields_of_the_fixture_have_its_axes() -> None:

    plans = plan_fields(list(load_sequence(fixture_sequence())))
    assert len(plans) == 8  # p0 on a 2x1 grid, p1 ("test_name") on its own 2x3 grid
    p0 = plans[(0, 0)]
    assert p0.sizes == {"t": 243, "c": 3, "z": 3}
    assert p0.channels == ("Cy5", "FITC", "DAPI")
    assert (p0.z_step_um, p0.t_interval_s) == (0.5, 10.0)  # 3 s for 3 points, then 10 s
    assert p0.images == 1539
    p1 = plans[(1, 5)]
    assert p1.sizes == {"t": 243, "c": 2, "z": 11}
    assert p1.channels == ("Cy5", "FITC")
    assert p1.z_step_um == 1.0 and p1.position_name == "test_name"
    assert sum(p.images for p in plans.values()) == 35154


def test_simulator_has_the_filter_sets_of_other_microscopes() -> None:
    from pydantic import ValidationError

    from tasks.hardware.sim import SimulatorConfig, build_simulated_core

    core, sim = build_simulated_core(SimulatorConfig(width=64, height=64, time_scale=0))
    for preset, light_path in (("FITC", "GFP"), ("Cy5", "DAPI"), ("DAPI", "DAPI"), ("BF", "BF")):
        core.setConfig("Channel", preset)
        assert core.getCurrentConfig("Channel") == preset  # never mistaken for another preset
        assert sim.state().channel == light_path
    with pytest.raises(ValidationError, match=r"channel_presets: 'TRITC' selects 'RFP'"):
        SimulatorConfig(channel_presets={"TRITC": "RFP"})


# -- the store writer --------------------------------------------------------------------------


def test_image_writer_is_valid_at_every_flush_and_napari_reads_it(tmp_path: Path) -> None:
    layout = ImageLayout(
        name="field",
        axes=axes_from_sizes({"t": 4, "c": 2, "z": 3}, {"t": 3.0, "z": 0.5}),
        plane_shape=(24, 40),
        dtype="uint16",
        pixel_size_um=0.65,
        channels=channels_named(["DAPI", "FITC"]),
    )
    store = tmp_path / "field.ome.zarr"
    rng = np.random.default_rng(3)
    planes = {}
    with ImageWriter(store, layout) as writer:
        for t in range(3):
            for c in range(2):
                for z in range(3):
                    planes[t, c, z] = rng.integers(0, 4000, (24, 40), dtype=np.uint16)
                    writer.write({"t": t, "c": c, "z": z}, planes[t, c, z])
            writer.flush()
            validate_store(store)
            validate_spec_schemas(store)
            assert zarr.open_array(str(store / "0")).shape == (t + 1, 2, 3, 24, 40)
    data = zarr.open_array(str(store / "0"))[:]
    for (t, c, z), plane in planes.items():
        np.testing.assert_array_equal(data[t, c, z], plane)
    ((arrays, meta, kind),) = napari_layers(store)
    assert kind == "image" and arrays[0].shape == (3, 2, 3, 24, 40)
    assert meta["channel_axis"] == 1 and meta["axis_labels"] == ("t", "z", "y", "x")
    assert meta["scale"] == [3.0, 0.5, 0.65, 0.65]
    assert meta["name"] == ["field: DAPI", "field: FITC"]
    assert [cm.name for cm in meta["colormap"]] == ["blue", "green"]
    other = ImageWriter(tmp_path / "x.ome.zarr", layout)
    with pytest.raises(JournalError, match=r"z index 3 is outside"):
        other.write({"t": 0, "c": 0, "z": 3}, planes[0, 0, 0])
    with pytest.raises(JournalError, match=r"does not fit"):
        other.write({"t": 0, "c": 0, "z": 0}, planes[0, 0, 0][:5])
    assert not other.created  # nothing was written


# -- on the edge -------------------------------------------------------------------------------


def test_fixture_runs_and_every_frame_is_at_its_place(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    """The goal on a CI-sized cut of the fixture: the edge ran the sequence's events index for
    index, and every journaled frame is in its field's image at its (t, c, z), pixel for pixel."""

    sequence_file = fixture_subset(tmp_path)
    params = params_for(sim_edge, sequence_file, tmp_path / "out", fast=True, flush_every_s=0.2)
    summary = acquire(params)
    planned = list(shorten_sequence(load_sequence(sequence_file), 1.0))
    images = image_events(planned)
    assert summary["round_trip_exact"] is True
    assert summary["events"] == len(planned) == 608 and summary["frames_stored"] == len(images)
    assert summary["outcome"] == "completed" and summary["fields"] == 8
    assert summary["frames_from"] == "journal" and summary["flushes"] >= 2
    assert progress_shown(Path(summary["run_dir"])) == 100.0  # the UI's progress artifact

    # independently of the flow: the journal's frames against the sequence and the stores
    run_dir = Path(summary["run_dir"])
    command_id = f"{run_dir.name}.acquire.sequence"
    indices = journal_frames(sim_edge.journal, command_id)
    assert len(indices) == len(images)
    stores = {name: zarr.open_group(path, mode="r") for name, path in summary["stores"].items()}
    with FrameJournal.open(sim_edge.journal) as journal:
        for index, want in zip(indices, images, strict=True):
            meta = journal.read_meta(index)["meta"]
            ran = useq.MDAEvent.model_validate(meta["event"])
            assert ran.model_dump(exclude={"metadata", "sequence"}) == want.model_dump(
                exclude={"metadata", "sequence"}
            )
            p, g = want.index["p"], want.index["g"]
            name = f"p{p:03d}_g{g:03d}"
            place = tuple(want.index[a] for a in ("t", "c", "z"))
            np.testing.assert_array_equal(stores[name]["0"][place], journal.read(index))
    for name, group in stores.items():
        ome = group.attrs["ome"]
        axes = [a["name"] for a in ome["multiscales"][0]["axes"]]
        assert axes == ["t", "c", "z", "y", "x"]
        scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert scale[0] == 3.0 and scale[2] == (0.5 if name.startswith("p000") else 1.0)
        assert scale[3] == scale[4] == pytest.approx(0.65)  # 6.5 µm camera pixels at 10x
        labels = [ch["label"] for ch in ome["omero"]["channels"]]
        assert labels == (["Cy5", "FITC", "DAPI"] if name.startswith("p000") else ["Cy5", "FITC"])
        assert group["0"].shape[:3] == ((4, 3, 3) if name.startswith("p000") else (4, 2, 11))
        if name in ("p000_g000", "p001_g005"):  # one of each shape: validators take seconds
            validate_store(Path(summary["stores"][name]))
            validate_spec_schemas(Path(summary["stores"][name]))
        ((arrays, meta, _),) = napari_layers(Path(summary["stores"][name]))
        assert meta["channel_axis"] == 1 and arrays[0].shape == group["0"].shape
        assert meta["name"][0] == f"{name}: Cy5"
    # DAPI (every 3rd time point, no stack) is only at t 0 and 3, middle z; elsewhere unset
    dapi = stores["p000_g000"]["0"][:, 2]
    assert dapi[0, 1].any() and dapi[3, 1].any()
    assert not dapi[1].any() and not dapi[0, 0].any()


def test_stores_from_the_stream_and_valid_at_every_flush(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    """Away from the edge the stores read the stream (journaled frames); every flush of the
    store writer leaves a valid image (checked by replaying the run's journal)."""

    params = params_for(sim_edge, EXAMPLE, tmp_path / "out", fast=True, frames_from="stream")
    summary = acquire(params)
    assert summary["round_trip_exact"] and summary["frames_from"] == "stream"
    events = list(load_sequence(EXAMPLE))
    assert summary["frames_stored"] == len(image_events(events))

    command_id = f"{Path(summary['run_dir']).name}.acquire.sequence"
    indices = journal_frames(sim_edge.journal, command_id)
    plans = plan_fields(events)
    ran = list(shorten_sequence(load_sequence(EXAMPLE), 1.0))  # what --fast ran
    expected = [normalised_event(e) for e in image_events(ran)]
    replay = FieldStores(tmp_path / "replay", plans, expected, flush_every_s=1e9)
    checked = []

    def check(stores: FieldStores) -> None:
        for writer in stores.writers.values():
            validate_store(writer.path)
            validate_spec_schemas(writer.path)
        checked.append(stores.frames)

    replay.on_flush = check
    with FrameJournal.open(sim_edge.journal) as journal:
        for n, index in enumerate(indices):
            replay.add(FrameRecord(index, journal.read_meta(index)["meta"], journal.read(index)))
            if n in (0, len(indices) // 2):
                replay.flush()
    replay.close()
    assert checked == [1, len(indices) // 2 + 1, len(indices)]
    assert replay.round_trip.mismatches == 0
    for name, path in summary["stores"].items():
        np.testing.assert_array_equal(
            zarr.open_array(str(Path(path) / "0"))[:],
            zarr.open_array(str(tmp_path / "replay" / f"{name}.ome.zarr" / "0"))[:],
        )


def test_a_rerun_under_the_same_run_id_acquires_nothing_again(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    params = params_for(sim_edge, EXAMPLE, tmp_path / "out", fast=True, run_id="rerun-1")
    first = acquire(params)
    store = Path(first["stores"]["p000"]) / "0"
    pixels = zarr.open_array(str(store))[:]
    with EdgeClient(sim_edge.url, token_file=sim_edge.token_file) as edge:
        before = edge.state().frames_journaled
        again = acquire(params)
        assert edge.state().frames_journaled == before  # the edge ran the command once
    assert again["round_trip_exact"] and again["frames_stored"] == first["frames_stored"]
    np.testing.assert_array_equal(zarr.open_array(str(store))[:], pixels)


def test_a_sequence_the_envelope_forbids_moves_nothing(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    seq = tmp_path / "too_deep.yaml"
    seq.write_text(
        "channels: [DAPI]\nstage_positions: [{x: 100, y: 100, z: 0}]\n"
        "z_plan: {range: 500, step: 100}\n"
    )
    with EdgeClient(sim_edge.url, token_file=sim_edge.token_file) as edge:
        before = edge.state()
        with pytest.raises(ConfigurationError) as err:
            acquire(params_for(sim_edge, seq, tmp_path / "out"))
        after = edge.state()
    message = str(err.value)
    assert (
        "event 0 (p=0, c=0, z=0; channel DAPI; x=100 y=100 z=-250 µm): stage Z=-250 µm is outside"
        in message
    )
    assert "z_limits_um" in message and "nothing was queued or moved" in message
    assert after.frames_journaled == before.frames_journaled
    assert (after.stage.x, after.stage.y, after.stage.z) == (
        before.stage.x,
        before.stage.y,
        before.stage.z,
    )


def test_default_envelope_refuses_the_fixtures_channels(
    prefect_harness: PrefectServer, edge: EdgeProcess, tmp_path: Path
) -> None:
    """The session's edge has the default envelope (BF, DAPI, GFP): the fixture's Cy5 is refused
    at its first event, naming the limit, before anything moves."""
    params = params_for(edge, fixture_subset(tmp_path), tmp_path / "out", fast=True)
    with pytest.raises(ConfigurationError) as err:
        prepare_acquisition(params)
    message = str(err.value)
    assert "event 0 (t=0, p=0, g=0, c=0, z=0; channel Cy5" in message
    assert "allowed_channels" in message


def test_analysis_hook_measures_each_position_on_the_workers(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    hook = AnalysisHook(
        model="classical",
        scope="position",
        channel="DAPI",
        backend=BackendConfig(kind="dask", workers=1),
    )
    params = params_for(sim_edge, EXAMPLE, tmp_path / "out", fast=True, analysis=hook)
    summary = acquire(params)
    assert summary["round_trip_exact"]
    analysis = summary["analysis"]
    assert analysis["engine"] == "dask" and analysis["scope"] == "position"
    # one frame per visit (t, field): 3 time points x 2 positions
    assert analysis["frames_analysed"] == 6
    assert analysis["frames_per_field"] == {"0.0": 3, "1.0": 3}
    decisions = [
        json.loads(line)
        for line in (Path(summary["run_dir"]) / "decisions.jsonl").read_text().splitlines()
    ]
    analysed = [d for d in decisions if d.get("type") == "decision"]
    assert len(analysed) == 6 and {d["analysed"] for d in analysed} == {"remote"}
    assert all(d["decision"]["index"]["c"] == 0 for d in analysed)  # DAPI, the first channel


def test_cli_runs_a_sequence(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    import os

    env = {**os.environ, "PREFECT_API_URL": prefect_harness.url, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "scopeflow", "run", "acquire", "--sequence", str(EXAMPLE),
        "--fast", "--edge-url", sim_edge.url, "--token-file", str(sim_edge.token_file),
        "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["round_trip_exact"] and summary["fields"] == 2
    assert "frames stored (100.0 %)" in done.stderr  # the progress lines
    bad = tmp_path / "typo.yaml"
    bad.write_text("chanels: [DAPI]\n")
    cmd[cmd.index(str(EXAMPLE))] = str(bad)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 2
    assert "unknown field 'chanels'" in done.stderr and "did you mean 'channels'" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_whole_fixture_round_trips(
    prefect_harness: PrefectServer, sim_edge: EdgeProcess, tmp_path: Path
) -> None:
    """All 36,774 events (35,154 frames, 8 fields) under --fast; every frame checked."""

    params = params_for(sim_edge, fixture_sequence(), tmp_path / "out", fast=True)
    summary = acquire(params)
    print(json.dumps({k: v for k, v in summary.items() if k != "stores"}))
    assert summary["round_trip_exact"] and summary["events"] == 36774
    assert summary["frames_stored"] == 35154
    images = image_events(list(shorten_sequence(load_sequence(fixture_sequence()), 1.0)))
    command_id = f"{Path(summary['run_dir']).name}.acquire.sequence"
    indices = journal_frames(sim_edge.journal, command_id)
    assert len(indices) == len(images)
    arrays = {n: zarr.open_array(str(Path(p) / "0"))[:] for n, p in summary["stores"].items()}
    with FrameJournal.open(sim_edge.journal) as journal:
        for index, want in zip(indices, images, strict=True):
            name = f"p{want.index['p']:03d}_g{want.index['g']:03d}"
            place = tuple(want.index[a] for a in ("t", "c", "z"))
            np.testing.assert_array_equal(arrays[name][place], journal.read(index))
    for path in summary["stores"].values():
        validate_store(Path(path))
