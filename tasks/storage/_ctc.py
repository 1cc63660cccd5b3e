"""Cell Tracking Challenge (CTC) format: write tracking results, read ground truth, score them.

A ``RES`` folder holds ``maskNNN.tif`` (uint16 instance masks whose value is the track id, one
per time point) and ``res_track.txt`` (``L B E P``: track id, first and last time point,
parent id, 0 for none; a division is two tracks whose parent is the mother). Ground truth
folders hold ``TRA/man_trackNNN.tif`` and ``TRA/man_track.txt`` in the same form. Scores come
from py-ctcmetrics (the challenge's own measures, reimplemented and validated upstream),
never from a metric of ours.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from scopeflow import ConfigurationError

__all__ = [
    "read_ctc_masks",
    "read_ctc_tracks",
    "score_ctc",
    "write_ctc_ground_truth",
    "write_ctc_result",
]

_DIGITS = re.compile(r"(\d+)\.tiff?$")


def write_ctc_result(
    folder: Path, masks: Sequence[np.ndarray], tracks: Iterable[tuple[int, int, int, int]]
) -> Path:
    """``folder/maskNNN.tif`` for every time point and ``folder/res_track.txt``."""
    _write(folder, "mask", "res_track.txt", masks, tracks)
    return folder


def write_ctc_ground_truth(
    folder: Path, masks: Sequence[np.ndarray], tracks: Iterable[tuple[int, int, int, int]]
) -> Path:
    """``folder/TRA/man_trackNNN.tif`` and ``folder/TRA/man_track.txt``."""
    _write(folder / "TRA", "man_track", "man_track.txt", masks, tracks)
    return folder


def read_ctc_masks(folder: Path) -> list[np.ndarray]:
    """Every ``*NNN.tif`` mask of a CTC folder, in time order (any number of digits)."""
    import tifffile

    files = sorted(
        (p for p in folder.iterdir() if _DIGITS.search(p.name)),
        key=lambda p: int(_DIGITS.search(p.name).group(1)),  # type: ignore[union-attr]
    )
    if not files:
        raise ConfigurationError(f"{folder} holds no numbered .tif masks (maskNNN.tif)")
    return [np.asarray(tifffile.imread(p)) for p in files]


def read_ctc_tracks(path: Path) -> list[tuple[int, int, int, int]]:
    """The ``L B E P`` rows of a ``res_track.txt`` / ``man_track.txt``."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            label, first, last, parent = (int(v) for v in line.split())
        except ValueError:
            raise ConfigurationError(
                f"{path}:{n}: expected four integers 'L B E P', got {line!r}"
            ) from None
        rows.append((label, first, last, parent))
    return rows


def score_ctc(result: Path, ground_truth: Path, metrics: Sequence[str] = ("TRA",)) -> dict:
    """py-ctcmetrics' scores of a RES folder against a ground-truth folder (with ``TRA/``)."""
    from ctc_metrics import evaluate_sequence

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its whole result dict
        scores = evaluate_sequence(str(result), str(ground_truth), metrics=list(metrics), threads=1)
    return {k: (float(v) if v is not None else None) for k, v in scores.items()}


def _write(
    folder: Path,
    stem: str,
    track_file: str,
    masks: Sequence[np.ndarray],
    tracks: Iterable[tuple[int, int, int, int]],
) -> None:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(masks) - 1)))
    for t, mask in enumerate(masks):
        mask = np.asarray(mask)
        if mask.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError(f"time point {t}: track ids above 65535 do not fit CTC's uint16")
        tifffile.imwrite(folder / f"{stem}{t:0{digits}d}.tif", mask.astype(np.uint16))
    lines = [f"{label} {first} {last} {parent}" for label, first, last, parent in tracks]
    (folder / track_file).write_text("\n".join(lines) + ("\n" if lines else ""))
