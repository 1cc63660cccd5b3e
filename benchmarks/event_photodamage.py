"""Does the light dose matter? Event-triggered imaging against the always-fast protocol on a
simulated sample whose cells stop dividing past a light dose (photodamage), scored on the
simulator's ground truth.

For each seed the event-triggered demo (``flows.run_event_demo``: three cells that will divide
late in a 60 s run, the classical model on one Ray worker) runs twice on an edge whose
simulator has photodamage on: once with the rounding/division detectors, once always fast
(the ``always`` detector, no time limit). Per run: the divisions due in the watched regions
(without light they all happen), how many the sample kept (the edge's own truth: a parent
still alive after its division time was arrested), how many were imaged at the fast rate,
and the light dose.

    python benchmarks/event_photodamage.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from _machine import describe_machine

from flows import run_event_demo

RESULTS = Path(__file__).parent / "results" / "event_photodamage.json"
# ms at 100 % intensity (the edge lights at 50 %): 16 s of the always-fast protocol (DAPI and
# GFP 50 ms each per second) arrest a cell; one event's fast stretch plus a minute of gentle
# watching stays well under it
PHOTODAMAGE = {"DAPI": 500.0, "GFP": 1000.0}
KEYS = (
    "events_true",
    "divisions_kept",
    "events_captured",
    "captured_fraction",
    "dose_mj",
    "dose_always_fast_mj",
    "dose_ratio",
    "time_points_fast",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="event-photodamage-") as tmp:
        for seed in args.seeds:
            for always_fast in (False, True):
                summary = run_event_demo(
                    Path(tmp),
                    seed=seed,
                    quiet=True,
                    photodamage_dose=PHOTODAMAGE,
                    always_fast=always_fast,
                )
                row = {"seed": seed, "protocol": summary["protocol"]}
                row |= {k: summary[k] for k in KEYS}
                runs.append(row)
                print(json.dumps(row), flush=True)
    totals: dict[str, dict[str, int]] = {}
    for row in runs:
        t = totals.setdefault(row["protocol"], {"events_true": 0, "divisions_kept": 0})
        t["events_true"] += row["events_true"]
        t["divisions_kept"] += row["divisions_kept"]
    results = {
        "machine": describe_machine(),
        "load_average_1min": os.getloadavg()[0],
        "photodamage_dose_ms_at_100pct": PHOTODAMAGE,
        "runs": runs,
        "totals": totals,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    for protocol, t in totals.items():
        print(f"{protocol}: {t['divisions_kept']} of {t['events_true']} divisions kept")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
