"""The last phase of a plate screen: score each well (simulated edge), count, publish."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.decisions import Detection, PlateCalibration
from tasks.hardware import EdgeClient

from ._plate_params import PlateScreenParams
from ._targeted_summary import score_targets

__all__ = ["PlateRecord", "summarise_plate"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PlateRecord:
    """What the earlier phases produced (small: no pixels)."""

    run_id: str
    run_dir: Path
    plate_store: Path
    field_extents: dict[str, list[Box]]
    calibration: PlateCalibration
    detections: int
    targets: list[tuple[str, Detection]]
    loop_latency_ms: list[float]
    started: float
    analysis: dict[str, Any] = field(default_factory=dict)


@task(name="summarise-plate", cache_policy=NO_CACHE)
def summarise_plate(params: PlateScreenParams, record: PlateRecord) -> dict[str, Any]:
    """Counts, per-well and plate-wide ground-truth scores (simulated edge), artifacts."""
    per_well_targets: dict[str, list[Detection]] = {w: [] for w in record.field_extents}
    for well, target in record.targets:
        per_well_targets[well].append(target)
    with EdgeClient.connect(
        microscope=params.microscope,
        url=params.edge_url,
        token_file=params.edge_token_file,
        ca_file=params.edge_ca_file,
    ) as edge:
        state = edge.wait_until_idle()
        wells: dict[str, dict[str, Any]] = {}
        for well, boxes in record.field_extents.items():
            row: dict[str, Any] = {"fields": len(boxes), "targets": len(per_well_targets[well])}
            if params.score_against_truth and state.simulated:
                margin = 20.0
                b = np.array(boxes)
                around = (
                    float(b[:, 0].min() - margin),
                    float(b[:, 1].min() - margin),
                    float(b[:, 2].max() + margin),
                    float(b[:, 3].max() + margin),
                )
                cells = edge.truth(around)["cells"]
                targets = [(t.x_um, t.y_um) for t in per_well_targets[well]]
                row["truth"] = score_targets(targets, cells, boxes)
            wells[well] = row
    truth = _plate_truth(wells)
    summary: dict[str, Any] = {
        "run_id": record.run_id,
        "plate": params.plate,
        "calibration": asdict(record.calibration),
        "wells": len(wells),
        "fields": sum(w["fields"] for w in wells.values()),
        "targets_detected": record.detections,
        "targets_imaged": len(record.targets),
        "truth": truth,
        "per_well": wells,
        "analysis": record.analysis,
        "frames_acquired": state.frames_acquired,
        "stores": {"plate": str(record.plate_store), "run_dir": str(record.run_dir)},
        "wall_s": round(time.perf_counter() - record.started, 2),
    }
    _publish(record, summary)
    return summary


def _plate_truth(wells: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Recall and precision over every nucleus and target of the plate, with the worst well."""
    scored = {w: r["truth"] for w, r in wells.items() if "truth" in r}
    if not scored:
        return None
    cells = sum(t["cells_in_region"] for t in scored.values())
    found = sum(t["cells_found"] for t in scored.values())
    targets = sum(wells[w]["targets"] for w in scored)
    on_cells = sum(t["targets_on_cells"] for t in scored.values())
    return {
        "cells_in_fields": cells,
        "recall": round(found / cells, 4) if cells else 1.0,
        "precision": round(on_cells / targets, 4) if targets else 1.0,
        "wells_scored": len(scored),
    }


def _publish(record: PlateRecord, summary: dict[str, Any]) -> None:
    rows = []
    for well, r in summary["per_well"].items():
        t = r.get("truth") or {}
        rows.append(
            {
                "well": well,
                "fields": r["fields"],
                "targets": r["targets"],
                "cells (truth)": t.get("cells_in_region", ""),
                "recall": t.get("recall", ""),
                "precision": t.get("precision", ""),
            }
        )
    create_table_artifact(rows, key="plate-screen-wells", description="Targets per well")
    truth = summary["truth"]
    truth_lines = (
        f"| nuclei in the fields (truth) | {truth['cells_in_fields']} |\n"
        f"| recall | {truth['recall']} |\n| precision | {truth['precision']} |\n"
        if truth
        else ""
    )
    cal = record.calibration
    create_markdown_artifact(
        f"# Plate screen {record.run_id}\n\n| measure | value |\n| --- | --- |\n"
        f"| plate | {summary['plate']} |\n"
        f"| A1 centre | ({cal.a1_center_um[0]:.1f}, {cal.a1_center_um[1]:.1f}) µm |\n"
        f"| rotation / pitch scale | {cal.rotation_deg:.3f}° / {cal.scale:.4f} |\n"
        f"| wells / fields | {summary['wells']} / {summary['fields']} |\n"
        f"| detections / targets imaged | {summary['targets_detected']} / "
        f"{summary['targets_imaged']} |\n"
        f"{truth_lines}"
        f"| wall time | {summary['wall_s']} s |\n\nHCS plate: `{record.plate_store}`\n",
        key="plate-screen-summary",
        description="Plate screen summary",
    )
