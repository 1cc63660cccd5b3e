"""Multi-well plates: plate types and stage calibration (pure), the HCS plate store under the
official validators, the simulator's plate, and the plate-screen flow on a real edge process
and the real Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
import yaml
import zarr
from typer.testing import CliRunner

from flows import PlateScreenParams
from flows.plate_screen import plate_screen
from scopeflow import ConfigurationError
from scopeflow.cli import app
from tasks.decisions import (
    calibrate_plate,
    check_plate_on_stage,
    plate_fields,
    plate_type,
    well_index,
)
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.hardware.sim import SimulatorConfig, VirtualSample, build_simulated_core
from tasks.inference import load_model
from tasks.storage import HcsAcquisition, PlateWriter

from .conftest import shared_data, validate_store

pytestmark = pytest.mark.heavy

A1 = (14_380.0, 74_240.0)  # where the simulator puts an SBS plate's A1 (rows run towards -y)
H12 = (A1[0] + 11 * 9_000.0, A1[1] - 7 * 9_000.0)
CALIBRATION = {"A1": A1, "H12": H12}


# ------------------------------------------------------------------ plate types and calibration


def test_an_unknown_plate_type_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown plate type '97-well'.*96-well.*384-well"
    ):
        plate_type("97-well")
    with pytest.raises(ValueError, match=r"unknown plate type '97-well'.*96-well"):
        SimulatorConfig(plate="97-well")


def test_well_names() -> None:
    plate = plate_type("384-well")
    assert well_index("A1", plate) == (0, 0)
    assert well_index("P24", plate) == (15, 23)
    assert well_index("b03", plate) == (1, 2)
    with pytest.raises(ConfigurationError, match="'Q1' is not on a 16x24 plate"):
        well_index("Q1", plate)
    with pytest.raises(ConfigurationError, match="not a well name"):
        well_index("1A", plate)


@pytest.mark.parametrize(("rotation", "scale"), [(0.0, 1.0), (1.2, 1.004), (-2.5, 0.997)])
def test_calibration_recovers_rotation_offset_and_scale(rotation: float, scale: float) -> None:
    """Wells measured on a plate placed by useq itself (rotated, pitch scaled), with 3 µm of
    measurement noise: the calibrated plan puts every well within a few µm of the truth."""
    nominal = plate_type("96-well")
    sx, sy = nominal.well_spacing
    true_plate = nominal.model_copy(update={"well_spacing": (sx * scale, sy * scale)})
    truth = useq.WellPlatePlan(
        plate=true_plate, a1_center_xy=(15_000.0, 73_000.0), rotation=rotation,
        selected_wells=slice(None),
    )  # fmt: skip
    where = {p.name: np.array([p.x, p.y]) for p in truth.all_well_positions}
    rng = np.random.default_rng(7)
    measured = {w: tuple(where[w] + rng.normal(0, 3, 2)) for w in ("A1", "H12", "A12")}
    cal = calibrate_plate("96-well", measured)
    assert cal.rotation_deg == pytest.approx(rotation, abs=0.01)
    assert cal.scale == pytest.approx(scale, abs=1e-4)
    fitted = {p.name: np.array([p.x, p.y]) for p in cal.plan().all_well_positions}
    worst = max(np.linalg.norm(fitted[w] - where[w]) for w in where)
    assert worst < 10.0, worst
    # two wells are enough
    two = calibrate_plate("96-well", {w: measured[w] for w in ("A1", "H12")})
    assert two.rotation_deg == pytest.approx(rotation, abs=0.01)


def test_a_calibration_that_does_not_fit_the_plate_type_is_refused() -> None:
    # H12 measured on a 384-well plate's pitch (4.5 mm), called a 96-well plate
    with pytest.raises(ConfigurationError, match=r"do not fit a 96-well plate.*pitch.*plate type"):
        calibrate_plate("96-well", {"A1": A1, "H12": (A1[0] + 11 * 4_500, A1[1] - 7 * 4_500)})
    with pytest.raises(ConfigurationError, match="needs the centre of A1"):
        calibrate_plate("96-well", {"H12": H12})
    with pytest.raises(ConfigurationError, match="inconsistent: A12 lies"):
        calibrate_plate("96-well", {"A1": A1, "H12": H12, "A12": (A1[0] + 99_000, A1[1] + 900)})


def test_a_plate_off_the_stage_is_refused_naming_the_wells() -> None:
    cal = calibrate_plate("96-well", {"A1": (2_000.0, 74_240.0), "H12": (101_000.0, 11_240.0)})
    plan = cal.plan(slice(None), useq.GridRowsColumns(rows=2, columns=2, fov_width=800,
                                                      fov_height=800))  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"88 well\(s\) fall off the stage.*A2 at"):
        check_plate_on_stage(plan, (0.0, 0.0, 10_000.0, 85_480.0), (800.0, 800.0))
    on = calibrate_plate("96-well", CALIBRATION).plan(slice(None))
    check_plate_on_stage(on, (0.0, 0.0, 127_760.0, 85_480.0), (800.0, 800.0))


def test_plate_fields_name_their_well_and_number() -> None:
    plan = calibrate_plate("96-well", CALIBRATION).plan(
        ([0, 7], [0, 11]), useq.GridRowsColumns(rows=2, columns=2, fov_width=300, fov_height=300)
    )
    fields = plate_fields(plan)
    assert [(f.well, f.field) for f in fields] == [
        ("A1", 0), ("A1", 1), ("A1", 2), ("A1", 3), ("H12", 0), ("H12", 1), ("H12", 2), ("H12", 3)
    ]  # fmt: skip
    centre = np.mean([(f.x_um, f.y_um) for f in fields[4:]], axis=0)
    assert centre == pytest.approx(H12)


# ------------------------------------------------------------------ the HCS plate store


def _spec_schemas(store: Path) -> None:
    script = shared_data("ome_ngff_spec", "validate_store_with_spec_schemas.py")
    done = subprocess.run(
        [sys.executable, str(script), str(store), "--strict"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "strict_plate" in done.stdout and "strict_well" in done.stdout


def _small_plate(path: Path) -> PlateWriter:
    writer = PlateWriter(
        path,
        name="test",
        rows=list("ABCDEFGH"),
        columns=[str(c) for c in range(1, 13)],
        acquisitions=[HcsAcquisition(0, "overview 10x"), HcsAcquisition(1, "detail 40x")],
    )
    rng = np.random.default_rng(0)
    for row, column in (("A", "1"), ("B", "3"), ("H", "12")):
        for _ in range(2):
            image = rng.integers(0, 4000, (32, 48), dtype=np.uint16)
            writer.add_field(row, column, image, acquisition=0, pixel_size_um=0.65, channel="DAPI")
        stack = rng.integers(0, 4000, (3, 16, 16), dtype=np.uint16)
        writer.add_field(
            row, column, stack, acquisition=1, pixel_size_um=0.1625, z_step_um=2.0, channel="DAPI"
        )
    return writer


def test_hcs_plate_is_valid_and_shaped_like_the_reference_example(tmp_path: Path) -> None:
    store = tmp_path / "plate.ome.zarr"
    _small_plate(store)
    validate_store(store)
    _spec_schemas(store)
    ours = json.loads((store / "zarr.json").read_text())["attributes"]["ome"]
    reference = json.loads(
        shared_data("ome_zarr_models_testdata", "tests/data/examples/v05/hcs_example.json")
        .read_text()
    )["ome"]  # fmt: skip
    assert ours["version"] == reference["version"] == "0.5"
    assert set(reference["plate"]) <= set(ours["plate"])  # every key the example has
    assert [c["name"] for c in ours["plate"]["columns"]] == [str(c) for c in range(1, 13)]
    assert ours["plate"]["wells"] == [
        {"path": "A/1", "rowIndex": 0, "columnIndex": 0},
        {"path": "B/3", "rowIndex": 1, "columnIndex": 2},
        {"path": "H/12", "rowIndex": 7, "columnIndex": 11},
    ]
    assert ours["plate"]["field_count"] == 3
    acq = {a["id"]: a for a in ours["plate"]["acquisitions"]}
    assert acq[0]["maximumfieldcount"] == 2 and acq[1]["maximumfieldcount"] == 1
    well_ref = json.loads(
        shared_data("ome_zarr_models_testdata", "tests/data/examples/v05/well_example.json")
        .read_text()
    )["ome"]  # fmt: skip
    well = json.loads((store / "B" / "3" / "zarr.json").read_text())["attributes"]["ome"]
    assert set(well["well"]) == set(well_ref["well"])
    assert well["well"]["images"] == [
        {"acquisition": 0, "path": "0"}, {"acquisition": 0, "path": "1"},
        {"acquisition": 1, "path": "2"},
    ]  # fmt: skip
    # ome-zarr-models reads it as a plate, with every well and field
    from ome_zarr_models.v05.hcs import HCS

    hcs = HCS.from_zarr(zarr.open_group(store, mode="r"))
    assert len(hcs.ome_attributes.plate.wells) == 3
    assert zarr.open_array(store / "B" / "3" / "2" / "0", mode="r").shape == (3, 16, 16)


def test_hcs_plate_refuses_bad_names_and_an_existing_path(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"name": "p", "acquisitions": [HcsAcquisition(0, "a")]}
    with pytest.raises(ValueError, match="alphanumeric"):
        PlateWriter(tmp_path / "a.zarr", rows=["A-1"], columns=["1"], **kw)
    writer = PlateWriter(tmp_path / "b.zarr", rows=["A"], columns=["1"], **kw)
    with pytest.raises(ValueError, match="well B1 is not on this plate"):
        writer.add_field("B", "1", np.zeros((4, 4), np.uint8), acquisition=0, pixel_size_um=1.0)
    with pytest.raises(ValueError, match="acquisition 5 is not one"):
        writer.add_field("A", "1", np.zeros((4, 4), np.uint8), acquisition=5, pixel_size_um=1.0)
    from scopeflow import JournalError

    with pytest.raises(JournalError, match="exists already"):
        PlateWriter(tmp_path / "b.zarr", rows=["A"], columns=["1"], **kw)


# ------------------------------------------------------------------ the simulator's plate


def test_the_simulated_plate_has_cells_only_in_its_wells() -> None:
    sample = VirtualSample(SimulatorConfig(plate="96-well", nuclei_per_mm2=40, time_scale=0))
    cells = sample.cells_at(0.0)
    plan = calibrate_plate("96-well", CALIBRATION).plan(slice(None))
    centres = np.array([(p.x, p.y) for p in plan.all_well_positions])
    d = np.hypot(cells.x_um[:, None] - centres[:, 0], cells.y_um[:, None] - centres[:, 1])
    radius = 3_200.0
    # seeded inside a well; since then wandered a few tens of µm at most
    assert (d.min(axis=1) <= radius + 60).all()
    per_well = np.bincount(d.argmin(axis=1), minlength=96)
    expected = 40 * np.pi * 3.2**2
    assert per_well.min() > 0.6 * expected and per_well.max() < 1.4 * expected
    assert len(sample.cells_at(0.0, (A1[0] + 4_000, A1[1] - 1_000, A1[0] + 5_000, A1[1]))) == 0


def test_classical_model_finds_nothing_in_an_empty_field() -> None:
    """Otsu splits any image in two; on a field between cells it used to return hundreds of
    noise objects (a sparse well's empty fields became hundreds of false targets)."""
    core, sim = build_simulated_core(
        SimulatorConfig(plate="96-well", nuclei_per_mm2=40, width=256, height=256, time_scale=0)
    )
    core.setXYPosition(A1[0] + 4_500, A1[1])  # between A1 and A2: no cells
    core.snapImage()
    model = load_model("classical")
    assert model.segment(core.getImage(), pixel_size_um=0.65).max() == 0
    cell = sim.truth((A1[0] - 1_000, A1[1] - 1_000, A1[0] + 1_000, A1[1] + 1_000))
    core.setXYPosition(float(cell.x_um[0]), float(cell.y_um[0]))
    core.snapImage()
    assert model.segment(core.getImage(), pixel_size_um=0.65).max() > 0


# ------------------------------------------------------------------ the flow, on a real edge

PLATE_EDGE = ["--plate", "96-well", "--camera-size", "256", "--density", "40", "--time-scale", "0"]


@pytest.fixture(scope="module")
def plate_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    with EdgeProcess(tmp_path_factory.mktemp("plate-edge"), extra_args=PLATE_EDGE) as edge:
        yield edge


def test_96_well_plate_with_4_fields_per_well_is_a_valid_hcs_plate(
    prefect_harness: None, plate_edge: EdgeProcess, tmp_path: Path
) -> None:
    """The whole plate through ``scopeflow run plate --params``: 96 wells x 4 overview fields
    (256x256 camera at 10x), one detail plane per well's best target."""
    params = {
        "plate": "96-well",
        "calibration": {k: list(v) for k, v in CALIBRATION.items()},
        "fields": {"rows": 2, "columns": 2, "overlap": 0.1},
        "detail": {"z_range_um": 0.0},
        "rules": {"max_targets": 1, "max_area_um2": 600},
        "backend": {"kind": "ray", "workers": 1},
        "output_dir": str(tmp_path),
    }
    path = tmp_path / "plate.yaml"
    path.write_text(yaml.safe_dump(params))
    before = EdgeClient(plate_edge.url, token_file=plate_edge.token_file).wait_until_idle()
    result = CliRunner().invoke(
        app,
        ["run", "plate", "--params", str(path), "--edge-url", plate_edge.url,
         "--token-file", str(plate_edge.token_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["wells"] == 96 and summary["fields"] == 384
    store = Path(summary["stores"]["plate"])
    validate_store(store)
    _spec_schemas(store)
    plate = json.loads((store / "zarr.json").read_text())["attributes"]["ome"]["plate"]
    assert len(plate["wells"]) == 96
    assert [r["name"] for r in plate["rows"]] == list("ABCDEFGH")
    counts = {a["id"]: a.get("maximumfieldcount") for a in plate["acquisitions"]}
    assert counts[0] == 4
    overview_fields = detail_fields = 0
    with EdgeClient(plate_edge.url, token_file=plate_edge.token_file) as edge:
        for well in plate["wells"]:
            images = json.loads((store / well["path"] / "zarr.json").read_text())
            images = images["attributes"]["ome"]["well"]["images"]
            overview_fields += sum(1 for i in images if i["acquisition"] == 0)
            detail_fields += sum(1 for i in images if i["acquisition"] == 1)
        # a field holds its frame, pixel for pixel as the edge journaled it
        group = zarr.open_group(store / "E" / "7" / "2", mode="r")
        frame = edge.frame(group.attrs["scopeflow"]["edge_frame"])
        np.testing.assert_array_equal(group["0"][...], frame.pixels)
        assert group.attrs["scopeflow"]["well"] == "E7"
    assert overview_fields == 384
    assert detail_fields == summary["targets_imaged"] <= 96
    assert summary["frames_acquired"] - before.frames_acquired == 384 + detail_fields
    print(f"96-well plate: {summary['wall_s']} s in the flow")


def test_a_calibration_off_the_stage_fails_before_anything_moves(
    prefect_harness: None, plate_edge: EdgeProcess, tmp_path: Path
) -> None:
    before = EdgeClient(plate_edge.url, token_file=plate_edge.token_file).wait_until_idle()
    # A1's centre 30 µm from the stage's edge: its fields would run off it
    shifted = {"A1": (30.0, A1[1]), "H12": (H12[0] - A1[0] + 30.0, H12[1])}
    params = PlateScreenParams(
        calibration=shifted,
        edge_url=plate_edge.url,
        edge_token_file=plate_edge.token_file,
        output_dir=tmp_path,
    )
    with pytest.raises(ConfigurationError, match=r"fall off the stage's limits.*A1 at"):
        plate_screen(params)
    after = EdgeClient(plate_edge.url, token_file=plate_edge.token_file).wait_until_idle()
    assert after.frames_acquired == before.frames_acquired
    with pytest.raises(ValueError, match="wells is empty"):
        PlateScreenParams(calibration=CALIBRATION, wells=[])


ACCURACY_WELLS = ["B2", "C5", "D8", "E11", "F3", "G6"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targeted_imaging_per_well_finds_the_cells_across_seeds(
    prefect_harness: None, tmp_path: Path, seed: int
) -> None:
    """Overview fields -> targets -> detail in 6 wells of a differently seeded plate each time
    (a subset of the 96 for CI time), the U-Net on one Ray worker, 512x512 camera: recall and
    precision against the simulator's ground truth of the nuclei in the wells' fields."""
    args = [*PLATE_EDGE, "--seed", str(seed)]
    args[args.index("--camera-size") + 1] = "512"
    with EdgeProcess(tmp_path / "edge", extra_args=args) as edge:
        summary = plate_screen(
            PlateScreenParams(
                calibration=CALIBRATION,
                wells=ACCURACY_WELLS,
                detail={"z_range_um": 0.0},
                rules={"max_targets": 500, "max_area_um2": 600},
                model="unet",
                backend={"kind": "ray", "workers": 1},
                edge_url=edge.url,
                edge_token_file=edge.token_file,
                output_dir=tmp_path / "out",
            )
        )
    truth = summary["truth"]
    print(f"seed {seed}: {json.dumps(truth)} in {summary['wall_s']} s")
    assert truth["wells_scored"] == len(ACCURACY_WELLS)
    assert truth["cells_in_fields"] >= 60, truth
    assert truth["recall"] >= 0.95 and truth["precision"] >= 0.95, truth
    validate_store(Path(summary["stores"]["plate"]))


def test_edge_with_an_unknown_plate_type_says_which_exist(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scopeflow", "edge", "serve", "--simulate", "--plate", "97-well",
         "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "unknown plate type '97-well'" in result.stderr and "96-well" in result.stderr


def test_run_plate_with_bad_parameters_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "plate.yaml"
    path.write_text(yaml.safe_dump({"plate": "96-well", "wells": ["A1"]}))
    result = CliRunner().invoke(app, ["run", "plate", "--params", str(path)])
    assert result.exit_code == 2
    assert "calibration" in result.output and "Field required" in result.output


def test_calibration_finds_the_simulated_plate_where_the_simulator_put_it() -> None:
    """A plate laid rotated on the simulated stage, A1 and H12 'measured' at its wells'
    centres: the calibrated plan's wells are the simulator's."""
    sample = VirtualSample(
        SimulatorConfig(plate="96-well", plate_rotation_deg=1.5, nuclei_per_mm2=1, time_scale=0)
    )
    centres = sample.wells.centres_um  # row-major, A1 first, H12 last
    cal = calibrate_plate("96-well", {"A1": tuple(centres[0]), "H12": tuple(centres[-1])})
    assert cal.rotation_deg == pytest.approx(1.5, abs=1e-6)
    fitted = np.array([(p.x, p.y) for p in cal.plan().all_well_positions])
    assert np.abs(fitted - centres).max() < 1e-6


def test_choose_targets_keeps_what_lies_inside_by_the_rules() -> None:
    from tasks.decisions import Detection, SelectionRules, choose_targets

    def det(x: float, area: float, tile: int = 0) -> Detection:
        return Detection(x, 0.0, area, np.sqrt(area / np.pi), area, tile, False)

    found = [det(0, 100), det(1, 90, 1), det(50, 100), det(500, 100), det(80, 5)]
    chosen = choose_targets(found, SelectionRules(min_area_um2=20), lambda x, y: x < 200)
    assert [d.x_um for d in chosen] == [0, 50]  # overlap merged, outside and debris left out
    assert choose_targets(found, SelectionRules(max_targets=1)) == [found[0]]


@pytest.mark.slow
def test_the_plate_demo_runs_from_the_command_line(tmp_path: Path) -> None:
    """``scopeflow demo plate --json``: a user's first plate screen, scored on the truth."""
    done = subprocess.run(
        [sys.executable, "-m", "scopeflow", "demo", "plate", "--json", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["wells"] == 8 and summary["fields"] == 32
    assert summary["truth"]["wells_scored"] == 8
    assert summary["truth"]["recall"] >= 0.9 and summary["truth"]["precision"] >= 0.9
    validate_store(Path(summary["stores"]["plate"]))
