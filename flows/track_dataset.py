"""Track a stored time-lapse offline into Cell Tracking Challenge ``RES`` format.

The same linker as the live tracking flow's offline path: laptrack's overlap linker over the
whole (t, y, x) instance-mask movie (``tasks.decisions.link_label_movie``), so divisions are
found where daughters overlap their mother and written as parent links.

Phases, each a Prefect task: ``check-inputs`` (movie, labels, output, ground truth; no pixels
read), ``segment-frames`` (without labels: every frame through the model, on the workers of a
compute profile or in this process; workers read their frames from the store and write labels
to a work array beside the output) or ``read-labels`` (the given masks), ``link-tracks``,
``write-res`` (``maskNNN.tif`` + ``res_track.txt``), ``score-ctc`` (with a ground truth: the
CTC measures from py-ctcmetrics), ``summarise`` (a table artifact). The label movie stays in
this process between phases (the tasks have no cache key and no persisted result).
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from scopeflow import ChunksFailed, ConfigurationError
from tasks.compute import get_profile, group_items, open_runner
from tasks.decisions import link_label_movie
from tasks.storage import Movie, open_movie, score_ctc, write_ctc_result

from ._dataset_prefect import PrefectStages, run_id
from ._dataset_run import INLINE, Stages, log
from ._dataset_work import ModelSpec
from ._track_params import TrackDatasetParams
from ._track_work import FrameDone, FrameSegmentContext, segment_frames

__all__ = [
    "CTC_METRICS",
    "TrackDatasetParams",
    "TrackInputs",
    "check_track_inputs",
    "run_track_dataset",
    "track_dataset",
]

CTC_METRICS = ("TRA", "DET", "LNK", "BC")
ARTIFACT_KEY = "track-dataset"


@dataclass(frozen=True)
class TrackInputs:
    """The opened movie (and labels), checked against each other and the output folder."""

    movie: Movie
    labels: Movie | None
    ground_truth: Path | None


def check_track_inputs(params: TrackDatasetParams) -> TrackInputs:
    """Open the movie and labels (layout only) and check everything a run needs before it
    starts; ConfigurationError naming the fix otherwise."""
    movie = open_movie(params.movie, channel=params.channel, z=params.z, position=params.position)
    if movie.frames < 2:
        raise ConfigurationError(
            f"{params.movie} holds {movie.frames} frame ({movie.selection}); tracking needs a "
            "time-lapse of at least 2 frames"
        )
    labels = None
    if params.labels is not None:
        labels = open_movie(
            params.labels,
            channel=params.channel,
            z=params.z,
            position=params.position,
            strict=False,
        )
        if labels.frames != movie.frames:
            raise ConfigurationError(
                f"--labels {params.labels} has {labels.frames} frames but the movie "
                f"{params.movie} has {movie.frames}; give one mask per frame of the movie"
            )
        if labels.shape[1:] != movie.shape[1:]:
            raise ConfigurationError(
                f"--labels {params.labels} frames are {labels.height}x{labels.width} but the "
                f"movie's are {movie.height}x{movie.width}; the masks must match the movie's "
                "frames pixel for pixel"
            )
        if not np.issubdtype(np.dtype(labels.dtype), np.integer):
            raise ConfigurationError(
                f"--labels {params.labels} holds {labels.dtype} pixels; instance masks must be "
                "integers (0 = background, 1..N = objects)"
            )
    else:
        _check_model(params.model)
    _check_out(params.out)
    return TrackInputs(movie, labels, _ground_truth(params.ground_truth))


def _check_model(name: str) -> None:
    from tasks.inference import available_models

    if ":" not in name and name not in available_models():
        raise ConfigurationError(
            f"unknown model {name!r}; available: {', '.join(available_models())} (or "
            "'package.module:factory'); or give --labels to link existing masks"
        )


def _check_out(out: Path) -> None:
    if out.is_file():
        raise ConfigurationError(f"--out {out} is a file; give a folder for the RES output")
    if out.is_dir() and any(out.iterdir()):
        count = sum(1 for _ in out.iterdir())
        raise ConfigurationError(
            f"--out {out} exists and is not empty ({count} entries); choose a new folder or "
            "empty this one (the RES folder must hold only this run's masks and tracks)"
        )


def _ground_truth(gt: Path | None) -> Path | None:
    """The folder holding ``TRA/`` (the TRA folder itself is accepted too)."""
    if gt is None:
        return None
    if (gt / "man_track.txt").is_file() and gt.name == "TRA":
        gt = gt.parent
    if not (gt / "TRA" / "man_track.txt").is_file():
        raise ConfigurationError(
            f"--gt {gt} is not a CTC ground-truth folder: it needs TRA/man_track.txt and "
            "TRA/man_trackNNN.tif (give the folder that holds TRA/, e.g. 01_GT)"
        )
    return gt


def read_labels(inputs: TrackInputs) -> dict[str, Any]:
    """The given masks as one (t, y, x) array."""
    assert inputs.labels is not None
    labels = inputs.labels.read()
    return {"labels": labels, "objects": _count_objects(labels), "model": None}


def segment_movie(inputs: TrackInputs, params: TrackDatasetParams) -> dict[str, Any]:
    """Every frame through the model, on the profile's workers or here; the (t, y, x) labels."""
    import zarr

    movie = inputs.movie
    work = params.out.parent / f".{params.out.name}.scopeflow-track-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        url = str(work / "labels.zarr")
        zarr.create_array(
            store=url,
            shape=movie.shape,
            chunks=(1, movie.height, movie.width),
            dtype="int32",
            fill_value=0,
            zarr_format=3,
        )
        context = FrameSegmentContext(
            movie=movie,
            labels=url,
            model=ModelSpec("segmentation", params.model, dict(params.model_options)),
            pixel_size_um=params.pixel_size_um or movie.pixel_size_um,
        )
        fn = partial(segment_frames, context)
        frames = list(range(movie.frames))
        if params.profile is None:
            done, where = _in_process(fn, frames), "this process"
        else:
            done, where = _on_workers(fn, frames, params.profile)
        labels = np.asarray(zarr.open_array(url, mode="r")[...])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log().info("segmented %d frames with %s in %s", len(done), params.model, where)
    versions = sorted({(d.model, d.model_version) for d in done})
    return {
        "labels": labels,
        "objects": sum(d.objects for d in done),
        "model": {"name": versions[0][0], "version": versions[0][1]} if versions else None,
        "model_seconds": round(sum(d.model_s for d in done), 3),
        "compute": where,
    }


def _in_process(fn: Any, frames: list[int]) -> list[FrameDone]:
    done: list[FrameDone] = []
    for t in frames:
        try:
            done += fn([t])
        except ValueError as exc:  # the model's way of refusing a frame (SegmentationModel)
            raise ChunksFailed(
                f"segmenting frame {t} failed: {exc}",
                failed=[str(t)],
                done=len(done),
                total=len(frames),
            ) from exc
    return done


def _on_workers(fn: Any, frames: list[int], profile: str) -> tuple[list[FrameDone], str]:
    with open_runner(get_profile(profile)) as runner:
        outcome = runner.map(fn, group_items(frames, max(1, runner.worker_count()), max_group=4))
        where = f"profile {profile!r} ({runner.describe().get('engine', '?')})"
    if outcome.failures:
        failed = [t for f in outcome.failures for t in f.items]
        raise ChunksFailed(
            f"segmenting {len(failed)} of {len(frames)} frames failed on the workers (first: "
            f"frame {failed[0]}: {outcome.failures[0].message}); fix the cause and run again",
            failed=[str(t) for t in failed],
            done=len(frames) - len(failed),
            total=len(frames),
        )
    return [d for result in outcome.results for d in result], where


def link_tracks(labels: np.ndarray, min_overlap: float) -> dict[str, Any]:
    """Track masks (values = CTC track ids) and lineage rows, laptrack's overlap linker."""
    tracked, rows = link_label_movie(labels, min_overlap=min_overlap)
    children: dict[int, int] = {}
    for _, _, _, parent in rows:
        if parent:
            children[parent] = children.get(parent, 0) + 1
    return {
        "tracked": tracked,
        "rows": rows,
        "tracks": len(rows),
        "divisions": sum(1 for n in children.values() if n >= 2),
    }


def write_res(out: Path, linked: dict[str, Any]) -> str:
    """``out/maskNNN.tif`` + ``out/res_track.txt``."""
    _check_out(out)  # nothing appeared there since the check
    write_ctc_result(out, list(linked["tracked"]), linked["rows"])
    return str(out)


def score(out: Path, ground_truth: Path) -> dict[str, float | None]:
    """py-ctcmetrics' TRA, DET, LNK and BC(i) of the RES folder against the ground truth."""
    scores = score_ctc(out, ground_truth, metrics=CTC_METRICS)
    keep = ("TRA", "DET", "LNK", "AOGM", "gt_divisions")
    return {k: v for k, v in scores.items() if k in keep or k.startswith("BC(")}


def summarise(summary: dict[str, Any]) -> None:
    """A table artifact of the run (one row per quantity)."""
    from prefect.artifacts import create_table_artifact

    rows = [
        {"quantity": k, "value": str(v)}
        for k, v in summary.items()
        if k not in ("scores", "seconds_per_phase")
    ]
    rows += [{"quantity": k, "value": f"{v:.4f}"} for k, v in summary.get("scores", {}).items()]
    create_table_artifact(
        rows, key=ARTIFACT_KEY, description=f"Tracks of {Path(summary['movie']).name}"
    )


def run_track_dataset(
    params: TrackDatasetParams, *, stages: Stages = INLINE, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check, segment or read labels, link, write RES, score: the summary (JSON-able)."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def phase(name: str, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        result = stages.step(name, fn, *args)
        seconds[name] = round(time.perf_counter() - t0, 3)
        return result

    inputs: TrackInputs = phase("check-inputs", check_track_inputs, params)
    if inputs.labels is not None:
        got = phase("read-labels", read_labels, inputs)
    else:
        got = phase("segment-frames", segment_movie, inputs, params)
    linked = phase("link-tracks", link_tracks, got["labels"], params.min_overlap)
    phase("write-res", write_res, params.out, linked)
    movie = inputs.movie
    summary: dict[str, Any] = {
        "movie": str(params.movie),
        "selection": movie.selection,
        "labels": str(params.labels) if params.labels else None,
        "mode": "link" if inputs.labels is not None else "segment+link",
        "model": got["model"],
        "compute": got.get("compute"),
        "out": str(params.out),
        "frames": movie.frames,
        "frame_shape": [movie.height, movie.width],
        "objects": got["objects"],
        "tracks": linked["tracks"],
        "divisions": linked["divisions"],
        "min_overlap": params.min_overlap,
        "run_id": (run or {}).get("run_id"),
    }
    if inputs.ground_truth is not None:
        summary["ground_truth"] = str(inputs.ground_truth)
        summary["scores"] = phase("score-ctc", score, params.out, inputs.ground_truth)
    summary["seconds_per_phase"] = seconds
    summary["seconds"] = round(time.perf_counter() - started, 3)
    log().info(
        "%s: %d frames, %d tracks, %d divisions -> %s",
        params.movie,
        movie.frames,
        summary["tracks"],
        summary["divisions"],
        params.out,
    )
    return summary


def _count_objects(labels: np.ndarray) -> int:
    total = 0
    for frame in labels:
        top = int(frame.max(initial=0))
        if top <= 0:
            continue
        if top < 10_000_000:
            total += int(np.count_nonzero(np.bincount(frame.ravel())[1:]))
        else:
            total += int(np.unique(frame[frame > 0]).size)
    return total


@flow(name="track-dataset", log_prints=True)
def track_dataset(params: TrackDatasetParams) -> dict[str, Any]:
    """Track a stored time-lapse (OME-Zarr, TIFF stack, frame folder) into CTC RES format."""
    stages = PrefectStages()
    summary = run_track_dataset(params, stages=stages, run={"run_id": run_id()})
    stages.step("summarise", summarise, summary)
    return summary
