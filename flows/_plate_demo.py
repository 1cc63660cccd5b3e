"""The plate demo: a plate screen on a simulated 96-well plate, with nothing to set up.

Starts a simulated edge whose slide is a 96-well plate (cells only in the wells), runs the
plate-screen flow on some wells with the U-Net on a local Ray worker, writes the HCS plate
under ``<data_dir>/<run>/`` and stops what it started, also on Ctrl-C or error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from ._demo_scope import simulated_scope
from ._plate_params import PlateScreenParams

__all__ = ["PLATE_DEMO_CALIBRATION", "run_plate_demo"]

# where the simulator puts an SBS 96-well plate: A1's centre and H12's (rows run towards -y)
PLATE_DEMO_CALIBRATION = {"A1": (14_380.0, 74_240.0), "H12": (113_380.0, 11_240.0)}
PLATE_DEMO_WELLS = ("A6", "B6", "C6", "D6", "E6", "F6", "G6", "H6")


def run_plate_demo(
    data_dir: Path,
    *,
    backend: str = "ray",
    model: str = "unet",
    seed: int = 0,
    wells: tuple[str, ...] = PLATE_DEMO_WELLS,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a plate screen end to end on the simulator; return the flow's summary."""
    from .plate_screen import plate_screen

    edge_args = ["--plate", "96-well", "--camera-size", "512", "--density", "40",
                 "--seed", str(seed)]  # fmt: skip
    with simulated_scope(
        data_dir,
        "plate-demo",
        edge_args,
        quiet=quiet,
        what="the simulated edge agent (a 96-well plate)",
        warm_prefect=False,
    ) as scope:
        params = PlateScreenParams(
            calibration=PLATE_DEMO_CALIBRATION,
            wells=list(wells),
            detail={"z_range_um": 0.0},
            rules={"max_targets": 500, "max_area_um2": 600},
            model=model,
            backend={"kind": backend, "workers": 1},
            output_dir=scope.run_dir,
            **scope.connection(),
        )
        with scope.console.status(
            f"screening {len(wells)} wells (Prefect flow, {backend} workers)..."
        ):
            summary = plate_screen(params)
    summary["wall_s"] = scope.wall_s()
    console = scope.console
    table = Table(title=f"scopeflow demo: plate screen {summary['run_id']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("plate", "wells", "fields", "targets_detected", "targets_imaged", "wall_s"):
        table.add_row(key, str(summary[key]))
    if summary["truth"]:
        for key, value in summary["truth"].items():
            table.add_row(f"truth: {key}", str(value))
    table.add_row("HCS plate", summary["stores"]["plate"])
    console.print(table)
    return summary
