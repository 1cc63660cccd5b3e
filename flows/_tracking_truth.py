"""Score a tracking run on a simulated edge against the simulator's ground truth (CTC TRA).

The simulator is deterministic for a given configuration and seed, so this process rebuilds
the same sample and, for every frame the run decided, rasterises the ground-truth nuclei at the
frame's stage position and sample time (stamped in its header). Cell ids are stable over time
and parents are known, which gives a Cell Tracking Challenge ground truth per position; the
run's own ``ctc/<position>`` RES folder is scored against it with py-ctcmetrics.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.decisions import contiguous_runs
from tasks.hardware.sim import SimulatorConfig, build_simulated_core, truth_labels
from tasks.live import DecisionLog
from tasks.storage import score_ctc, write_ctc_ground_truth

__all__ = ["score_tracking_on_simulation"]


def score_tracking_on_simulation(
    run_dir: Path, config: SimulatorConfig, *, objective: str, channel: str
) -> dict[str, Any]:
    """CTC TRA per position and their mean (``tra``: nuclei with under a quarter of their area in
    the frame left out; ``tra_strict``: every sliver kept), centring on ground truth against the
    static protocol's (the first frame's field kept all run), and the true divisions in view and
    followed through."""
    frames = _decided_frames(run_dir / "decisions.jsonl")
    core, sim = build_simulated_core(config)
    fov_um = min(config.width, config.height) * config.pixel_size_um(objective)
    try:
        scores: dict[str, float | None] = {}
        strict: dict[str, float | None] = {}
        centred: dict[str, float] = {}
        static: dict[str, float] = {}
        divisions = followed_through = 0
        for name, per_t in frames.items():
            centred[name], static[name], through = _true_centring(sim, per_t, 0.1 * fov_um)
            followed_through += through
            result = run_dir / "ctc" / name
            for key, min_visible, table in (("tra", 0.25, scores), ("tra_strict", 0.0, strict)):
                masks, rows = _ground_truth(sim, per_t, objective, channel, min_visible)
                if key == "tra":
                    divisions += _divisions(rows)
                if not result.exists():
                    table[name] = None
                    continue
                with tempfile.TemporaryDirectory() as gt:
                    write_ctc_ground_truth(Path(gt), masks, rows)
                    table[name] = score_ctc(result, Path(gt), ["TRA"])["TRA"]
    finally:
        core.unloadAllDevices()
    valid = [s for s in scores.values() if s is not None]
    valid_strict = [s for s in strict.values() if s is not None]
    return {
        "centred_fraction_truth": round(float(np.mean(list(centred.values()))), 4)
        if centred
        else None,
        "centred_fraction_static": round(float(np.mean(list(static.values()))), 4)
        if static
        else None,
        "tra": round(float(np.mean(valid)), 4) if valid else None,
        "tra_by_position": {k: (round(v, 4) if v is not None else None) for k, v in scores.items()},
        "tra_strict": round(float(np.mean(valid_strict)), 4) if valid_strict else None,
        "divisions_in_view": divisions,
        "divisions_followed_truth": followed_through,
    }


def _true_centring(
    sim: Any, per_t: dict[int, dict[str, Any]], limit_um: float
) -> tuple[float, float, int]:
    """Share of time points whose true followed cell lies within ``limit_um`` of the frame's
    centre; the same share for the static protocol (a time-lapse that stays where the first
    frame was taken); and the true divisions after which the daughter was centred.

    The followed cell is the one nearest the centre of the first frame; after it divides, the
    daughter the policy went on with (see ``_daughter_followed``)."""
    times = sorted(per_t)
    followed: int | None = None
    start: tuple[float, float] | None = None
    hits = static_hits = divisions = 0
    for n, t in enumerate(times):
        x, y, _ = per_t[t]["stage"]
        start = start or (x, y)
        cells = sim.sample.cells_at(float(per_t[t]["sample_time_s"]))
        if followed is None:
            k = int(np.argmin(np.hypot(cells.x_um - x, cells.y_um - y)))
            divided = False
        elif followed in cells.ids:
            k = int(np.flatnonzero(cells.ids == followed)[0])
            divided = False
        else:
            kids = np.flatnonzero(cells.parent_ids == followed)
            if kids.size == 0:  # gone (left the slide): not centred from here on
                continue
            k = int(kids[_daughter_followed(sim, per_t, times[n:], cells.ids[kids])])
            divided = True
        followed = int(cells.ids[k])
        centred = bool(np.hypot(cells.x_um[k] - x, cells.y_um[k] - y) <= limit_um)
        hits += centred
        static_hits += bool(
            np.hypot(cells.x_um[k] - start[0], cells.y_um[k] - start[1]) <= limit_um
        )
        divisions += divided and centred
    share = len(times) or 1
    return hits / share, static_hits / share, divisions


def _daughter_followed(
    sim: Any, per_t: dict[int, dict[str, Any]], times: list[int], daughters: np.ndarray
) -> int:
    """Which daughter the stage went with: the one nearest the frames' centres over the next
    ``_LOOK_AHEAD`` time points (right after a division both lie near the centre)."""
    distance = np.zeros(len(daughters))
    for t in times[:_LOOK_AHEAD]:
        x, y, _ = per_t[t]["stage"]
        cells = sim.sample.cells_at(float(per_t[t]["sample_time_s"]))
        for j, cell in enumerate(daughters):
            k = np.flatnonzero(cells.ids == cell)
            distance[j] += np.hypot(cells.x_um[k[0]] - x, cells.y_um[k[0]] - y) if k.size else 1e9
    return int(np.argmin(distance))


_LOOK_AHEAD = 10


def _decided_frames(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """position name -> time point -> the frame's decision record."""
    names: dict[int, str] = {}
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for record in DecisionLog.read(path):
        if record.get("type") != "decision":
            continue
        index = record["event_index"]
        p, t = int(index.get("p", 0)), int(index.get("t", 0))
        name = record["decision"].get("position") or names.get(p) or f"p{p:03d}"
        names[p] = name
        out.setdefault(name, {})[t] = record
    return out


def _ground_truth(
    sim: Any,
    per_t: dict[int, dict[str, Any]],
    objective: str,
    channel: str,
    min_visible: float = 0.25,
) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """CTC masks and lineage for one position; the runs of a cell not seen at every time point
    become separate tracks, each the parent of the next (CTC's gap convention)."""
    times = sorted(per_t)
    if times != list(range(len(times))):
        raise ValueError(f"time points {times[:5]}... are not 0..n-1: the run was not complete")
    labels_per_t, ids_per_t = [], []
    parent_of: dict[int, int] = {}
    for t in times:
        record = per_t[t]
        x, y, z = record["stage"]
        state = replace(
            sim.state(),
            x_um=x,
            y_um=y,
            z_um=z,
            objective=objective,
            channel=channel,
            illuminated=True,
            t_s=float(record["sample_time_s"]),
        )
        labels, _ignore, ids = truth_labels(sim, state)
        cells = sim.sample.cells_at(state.t_s)
        parent_of.update(zip(cells.ids.tolist(), cells.parent_ids.tolist(), strict=True))
        px = sim.config.pixel_size_um(objective)
        labels, ids = _without_slivers(labels, ids, cells, px, min_visible)
        labels_per_t.append(labels)
        ids_per_t.append(ids)
    seen: dict[int, list[int]] = {}
    for t, ids in enumerate(ids_per_t):
        for cell in ids.tolist():
            seen.setdefault(cell, []).append(t)
    ctc_of: dict[tuple[int, int], int] = {}  # (cell, t) -> CTC id
    last_run: dict[int, int] = {}
    rows: list[tuple[int, int, int, int]] = []
    next_id = 1
    for cell in sorted(seen, key=lambda c: (seen[c][0], c)):
        previous = 0
        for run in contiguous_runs(seen[cell]):
            if previous == 0:
                previous = last_run.get(parent_of.get(cell, -1), 0)
            rows.append((next_id, run[0], run[-1], previous))
            for t in run:
                ctc_of[(cell, t)] = next_id
            previous = next_id
            next_id += 1
        last_run[cell] = previous
    masks = []
    for t, (labels, ids) in enumerate(zip(labels_per_t, ids_per_t, strict=True)):
        lut = np.zeros(len(ids) + 1, np.uint16)
        lut[1:] = [ctc_of[(int(c), t)] for c in ids]
        masks.append(lut[labels])
    return masks, rows


def _without_slivers(
    labels: np.ndarray, ids: np.ndarray, cells: Any, pixel_um: float, min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """Drop nuclei of which less than ``_MIN_VISIBLE`` of the area lies inside the frame (cut
    by its edge), as ``truth_labels`` already leaves out the blurred ones: a sliver of a few
    pixels at the border cannot be delineated. ``tra_strict`` scores with them kept."""
    if not ids.size or min_visible <= 0:
        return labels, ids
    radius = dict(zip(cells.ids.tolist(), cells.radius_um.tolist(), strict=True))
    visible = np.bincount(labels.ravel(), minlength=ids.size + 1)[1:]
    full = np.array([np.pi * (radius[int(c)] / pixel_um) ** 2 for c in ids])
    keep = visible >= min_visible * full
    if keep.all():
        return labels, ids
    lut = np.zeros(ids.size + 1, labels.dtype)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels], ids[keep]


def _divisions(rows: list[tuple[int, int, int, int]]) -> int:
    """Mothers with two daughter tracks in a CTC lineage."""
    children: dict[int, int] = {}
    for _, _, _, parent in rows:
        if parent:
            children[parent] = children.get(parent, 0) + 1
    return sum(1 for n in children.values() if n == 2)
