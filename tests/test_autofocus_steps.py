"""Software autofocus as a step of targeted imaging and tracking (issue 14 section 3), on real
simulated edge processes with thermal focus drift (per seed), the real Prefect server and the
focus frames scored on local threads. Scored against the simulator's ground truth
(``/v1/truth``'s ``focus_z_um`` at each plane's place and instant): with autofocus the detail
stacks' centre planes and the tracked frames are within the depth of field; the same runs
without it are not. Plus: deterministic, unique command ids (a re-run repeats no move) and bad
focus settings refused before anything moves."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows import (
    AutofocusSettings,
    FocusOptics,
    Region,
    TargetedImagingParams,
    TrackedPosition,
    TrackingParams,
)
from flows.targeted_imaging import focus_and_acquire_details, targeted_imaging
from flows.tracking import tracking
from scopeflow import ConfigurationError
from tasks.decisions import Detection, SelectionRules
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.live import DecisionLog
from tasks.qc import QCWorkers, measure_focus_payload

pytestmark = pytest.mark.timeout(900)

SEEDS = (0, 1)
REGION = Region(x0=4_700.0, y0=4_700.0, x1=5_300.0, y1=5_300.0)
# at 40x (depth of field 1 µm): the default +-10 µm search in 11 coarse steps, 4 fine (15 frames)
AF_40X = AutofocusSettings(
    workers="threads", optics=FocusOptics.simulated(40.0), coarse_steps=11, fine_steps=4
)
AF_20X = AutofocusSettings(workers="threads", optics=FocusOptics.simulated(20.0))
OFF_UM = -4.0  # tracking: the cell layer sits this far from the run's z_um


def _off_focus_config(out: Path, off_um: float) -> Path:
    config = out / "sim.yaml"
    config.write_text(f"focal_plane_z_um: {off_um}\n")
    return config


TI_OFF_UM = -3.0  # targeted imaging: within the 10x overview's depth of field, not the 40x


def _truth_error(client: EdgeClient, x: float, y: float, z: float, t: float) -> float:
    return z - float(client.truth((x - 1.0, y - 1.0, x + 1.0, y + 1.0), t)["focus_z_um"])


# ------------------------------------------------------------------------- targeted imaging


def _ti_params(edge: EdgeProcess, out: Path, **update: Any) -> TargetedImagingParams:
    return TargetedImagingParams(
        region=REGION,
        rules=SelectionRules(min_area_um2=20, max_area_um2=600, max_targets=4),
        backend={"kind": "dask", "workers": 1},
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=out,
        **update,
    )


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def targeted(request, prefect_harness, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One seed: the cell layer 3 µm below ``focus_z_um`` (still sharp enough for the 10x
    overview, not for 40x) and drifting further at a quarter of a simulated minute per second;
    targeted imaging with autofocus, then without."""
    seed = request.param
    out = tmp_path_factory.mktemp(f"ti-af-{seed}")
    config = _off_focus_config(out, TI_OFF_UM)
    # a quarter of a simulated minute per second: the layer drifts ~0.025 µm a second early on,
    # so a stack taken even 15 s after its focus on a loaded machine is still within 1 µm's DOF
    # (at half a minute per second one stack, 11 s after its focus at load 16, was 0.57 µm off)
    args = ["--camera-size", "512", "--density", "30", "--time-scale", "15",
            "--seed", str(seed), "--focus-drift", "--sim-config", str(config)]  # fmt: skip
    with (
        EdgeProcess(out / "edge", extra_args=args) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        focused = targeted_imaging(_ti_params(edge, out / "af", autofocus=AF_40X))
        plain = targeted_imaging(_ti_params(edge, out / "plain"))
        yield {"seed": seed, "edge": edge, "client": client, "focused": focused, "plain": plain}


def _planes(client: EdgeClient, summary: dict[str, Any]) -> list[tuple[float, float]]:
    """Each stored stack's centre plane (from the store's own attributes) against the truth at
    its place and instant: (z - the target cell's own height, that cell's height above the
    cell layer's focus)."""
    out = []
    for store in summary["stores"]["targets"]:
        attrs = json.loads((Path(store) / "zarr.json").read_text())["attributes"]["scopeflow"]
        p = attrs["focus_plane"]
        x, y, z, t = p["x_um"], p["y_um"], p["z_um"], p["sample_time_s"]
        truth = client.truth((x - 15.0, y - 15.0, x + 15.0, y + 15.0), t)
        # the target: a cell whose nucleus covers the stack's centre (two overlapping at
        # different heights: either is a right focus, take the nearer), else the nearest cell
        at = (x, y)
        under = [c for c in truth["cells"] if _distance(c, at) < c["radius_um"]]
        if under:
            cell = min(under, key=lambda c: abs(z - c["z_um"]))
        else:
            cell = min(truth["cells"], key=lambda c: _distance(c, at))
        out.append((z - cell["z_um"], cell["z_um"] - truth["focus_z_um"]))
    return out


def _distance(cell: dict[str, Any], at: tuple[float, float]) -> float:
    return math.dist((cell["x_um"], cell["y_um"]), at)


def test_detail_stacks_are_centred_in_focus_with_autofocus_and_not_without(targeted) -> None:
    """Judged against the target cell's own height: at 40x a cell +-0.4 µm about the layer is
    what is imaged. A floating target (3 % of cells lie 4-20 µm above the layer) is left out:
    the field's sharpness may find the layer its neighbours are in rather than the cell (seen
    on seed 0; on seed 2 it found the floating cell), see README."""
    client, focused, plain = targeted["client"], targeted["focused"], targeted["plain"]
    half = AF_40X.optics.dof_um() / 2
    with_af, without = _planes(client, focused), _planes(client, plain)
    figures = (targeted["seed"], [(round(e, 2), round(h, 2)) for e, h in with_af],
               [(round(e, 2), round(h, 2)) for e, h in without])  # fmt: skip
    in_layer = [e for e, height in with_af if abs(height) < 2.0]
    assert len(with_af) == focused["targets_imaged"] >= 2 and len(in_layer) >= 2, figures
    assert all(abs(e) <= half for e in in_layer), figures
    # without: every target in the layer out of focus (a floating one may sit at focus_z_um)
    without_in_layer = [e for e, height in without if abs(height) < 2.0]
    assert len(without_in_layer) >= 2, figures
    assert min(abs(e) for e in without_in_layer) > 2.0, figures  # several µm off
    # the summary scores the same planes (against each target cell, and the layer)
    in_dof = sum(abs(e) <= half for e, _ in with_af) / len(with_af)
    assert focused["detail_focus_error_um"]["cell"]["in_dof_fraction"] == pytest.approx(in_dof)
    plain_in_dof = sum(abs(e) <= half for e, _ in without) / len(without)
    assert plain["detail_focus_error_um"]["cell"]["in_dof_fraction"] == pytest.approx(plain_in_dof)
    assert plain["detail_focus_error_um"]["layer"]["in_dof_fraction"] == 0.0
    assert all(r["found"] and r["frames"] <= AF_40X.max_frames for r in focused["autofocus"])
    assert plain["autofocus"] is None


def test_targeted_focus_ids_are_unique_deterministic_and_name_their_frames(targeted) -> None:
    focused = targeted["focused"]
    run_dir = Path(focused["stores"]["run_dir"])
    run = run_dir.name
    ids: list[str] = []
    for p, record in enumerate(focused["autofocus"]):
        assert record["phase"] == f"detail-focus-{p:04d}"
        log = DecisionLog.read(run_dir / "focus" / f"detail-focus-{p:04d}.jsonl")
        decided = [r for r in log if r["type"] == "decision"]
        assert len(decided) == record["frames"]
        assert all(r["command_id"].startswith(f"{run}.detail-focus-{p:04d}.p000-t00000-af")
                   for r in decided)  # fmt: skip
        ids += [c["id"] for r in decided for c in r["commands"]]
    assert ids and len(ids) == len(set(ids))
    for p, store in enumerate(focused["stores"]["targets"]):
        attrs = json.loads((Path(store) / "zarr.json").read_text())["attributes"]["scopeflow"]
        assert attrs["command_id"] == f"{run}.detail.stack-{p:04d}"
        assert attrs["autofocus"]["stack_centre_z_um"] == pytest.approx(
            attrs["focus_plane"]["z_um"], abs=1e-6
        )


def test_a_rerun_of_the_focus_and_detail_step_under_the_same_run_id_moves_nothing(
    targeted, tmp_path: Path
) -> None:
    client, edge = targeted["client"], targeted["edge"]
    cells = client.truth(REGION.as_tuple())["cells"][:2]
    targets = [Detection(c["x_um"], c["y_um"], 50.0, 4.0, 100.0, 0, False) for c in cells]
    params = _ti_params(edge, tmp_path, autofocus=AF_40X)
    with QCWorkers("threads", workers=1, measure=measure_focus_payload) as workers:
        first = focus_and_acquire_details.fn(
            params, targets, "rerun", tmp_path, (-200.0, 200.0), workers
        )
        before = client.wait_until_idle()
        again = focus_and_acquire_details.fn(
            params, targets, "rerun", tmp_path, (-200.0, 200.0), workers
        )
        after = client.wait_until_idle()
    assert again == first  # the same ids, the same focus (replayed from the decision logs)
    assert after.frames_acquired == before.frames_acquired
    assert first[0] == ["rerun.detail.stack-0000", "rerun.detail.stack-0001"]


# --------------------------------------------------------------------------------- tracking


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def tracked(request, prefect_harness, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One seed: the cell layer 4 µm below the run's z and drifting (one simulated minute per
    second); two positions tracked with autofocus at their start, then without."""
    seed = request.param
    out = tmp_path_factory.mktemp(f"track-af-{seed}")
    config = _off_focus_config(out, OFF_UM)
    args = ["--camera-size", "512", "--time-scale", "60", "--seed", str(seed),
            "--focus-drift", "--sim-config", str(config)]  # fmt: skip
    with (
        EdgeProcess(out / "edge", extra_args=args) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        cells = client.truth(REGION.as_tuple())["cells"]
        positions = [
            TrackedPosition(name=f"cell-{c['ids']}", x_um=c["x_um"], y_um=c["y_um"])
            for c in (cells[0], cells[len(cells) // 2])
        ]
        base = TrackingParams(
            positions=positions,
            time_points=6,
            interval_s=1.0,
            backend=None,
            edge_url=edge.url,
            edge_token_file=edge.token_file,
        )
        focused = tracking(base.model_copy(update={"autofocus": AF_20X, "output_dir": out / "af"}))
        plain = tracking(base.model_copy(update={"output_dir": out / "plain"}))
        yield {"seed": seed, "client": client, "focused": focused, "plain": plain}


def _tracked_errors(client: EdgeClient, summary: dict[str, Any]) -> list[float]:
    log = DecisionLog.read(Path(summary["run_dir"]) / "decisions.jsonl")
    return [
        _truth_error(client, *r["stage"], r["sample_time_s"])
        for r in log
        if r["type"] == "decision" and not r["event_index"].get("a", 0)
    ]


def test_tracked_frames_are_in_focus_with_autofocus_and_not_without(tracked) -> None:
    client, focused, plain = tracked["client"], tracked["focused"], tracked["plain"]
    half = AF_20X.optics.dof_um() / 2
    with_af, without = _tracked_errors(client, focused), _tracked_errors(client, plain)
    figures = (tracked["seed"], [round(e, 2) for e in with_af], [round(e, 2) for e in without])
    assert len(with_af) == len(without) == 12, figures
    assert all(abs(e) <= half for e in with_af), figures
    assert all(abs(e) > half for e in without), figures
    assert focused["focus_error_um"]["in_dof_fraction"] == 1.0
    assert plain["focus_error_um"]["in_dof_fraction"] == 0.0
    records = focused["autofocus"]
    assert [r["phase"] for r in records] == ["focus-p000", "focus-p001"]
    assert all(r["found"] and abs(r["z_um"] - OFF_UM) < 3.0 for r in records), records
    # inside the loop: time points 1..5 of both positions re-focused (autofocus.every = 1)
    refocus = focused["refocus"]
    assert refocus["calls"] == refocus["found"] == 10, refocus
    assert refocus["frames_max"] <= AF_20X.max_frames and refocus["frames_mean"] < 6, refocus
    assert plain["refocus"] is None


def test_tracking_focus_ids_are_unique_and_apart_from_the_tracking_phase(tracked) -> None:
    run_dir = Path(tracked["focused"]["run_dir"])
    run = run_dir.name
    ids = []
    for p in range(2):
        log = DecisionLog.read(run_dir / "focus" / f"focus-p{p:03d}.jsonl")
        ids += [c["id"] for r in log if r["type"] == "decision" for c in r["commands"]]
        assert all(i.startswith(f"{run}.focus-p{p:03d}.p000-t00000-af") for i in ids[-1:])
    track = DecisionLog.read(run_dir / "decisions.jsonl")
    track_ids = [c["id"] for r in track if r["type"] == "decision" for c in r["commands"]]
    assert all(i.startswith(f"{run}.track.") for i in track_ids)
    # the loop's sweeps: keyed by time point, position and round; each frame names its command
    sweeps = {r["command_id"].rsplit(".", 1)[-1] for r in track if r["type"] == "decision"
              and r["event_index"].get("a", 0)}  # fmt: skip
    assert {"t00001-p000-af0", "t00005-p001-af0"} <= sweeps, sorted(sweeps)
    everything = ids + track_ids
    assert len(everything) == len(set(everything))


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("settings", "start_z", "message"),
    [
        ({"z_limits_um": (500.0, 600.0)}, 0.0, r"do not overlap the edge's envelope z limits"),
        ({"z_limits_um": (10.0, 50.0)}, 0.0, r"outside the sweeps' z limits \[10, 50\]"),
        ({"exposure_ms": 5000.0}, 0.0, r"forbids .* autofocus light.*max_exposure_ms"),
    ],
)
def test_bad_focus_settings_stop_both_flows_before_anything_moves(
    prefect_harness, edge: EdgeProcess, client: EdgeClient, tmp_path: Path,
    settings: dict[str, Any], start_z: float, message: str,
) -> None:  # fmt: skip
    af = AutofocusSettings(workers="threads", **settings)
    connection = {"edge_url": edge.url, "edge_token_file": edge.token_file, "output_dir": tmp_path}
    before = client.state()
    with pytest.raises(ConfigurationError, match=message):
        targeted_imaging(
            TargetedImagingParams(region=REGION, autofocus=af, focus_z_um=start_z, **connection)
        )
    with pytest.raises(ConfigurationError, match=message):
        tracking(
            TrackingParams(
                positions=[TrackedPosition(name="a", x_um=5000.0, y_um=5000.0)],
                time_points=2,
                backend=None,
                autofocus=af,
                z_um=start_z,
                **connection,
            )
        )
    after = client.state()
    assert after.frames_journaled == before.frames_journaled
    assert after.stage == before.stage
    assert after.objective == before.objective
