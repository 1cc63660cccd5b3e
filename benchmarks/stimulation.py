"""External devices on an event: the stimulate-on-event flow on the simulator, over several seeds.

Runs ``scopeflow demo stimulation`` (the product's flow on a simulated edge with a DMD and a
pump under an envelope, the model on a local Ray worker) once per seed and prints, against the
simulator's ground truth: how many patterns were fired and how many of the lit cells were on
the event when lit (rounded up, or a fresh daughter), the reporter's activation 300 simulated
seconds later, the patterns' light dose, the divisions in the demo region after the drug
against the same sample without it (the drug's effect), and the envelope's refusal of a pump run
over its volume limit (nothing pumped). Records ``results/stimulation.json``.

    python benchmarks/stimulation.py [--seeds 0 1 2] [--positions 2] [--duration-s 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from _machine import describe_machine

from flows import run_stimulation_demo

RESULTS = Path(__file__).parent / "results" / "stimulation.json"
KEYS = ("triggers", "stimulations", "stimulations_fired", "stimulations_refused",
        "stimulated_cells", "stimulated_on_event", "stimulated_on_event_fraction",
        "reporter_activation_after", "stimulation_dose_mj", "dose_mj", "dose_frames_mj",
        "divisions_after_drug", "divisions_without_drug", "refused_example", "wall_s")  # fmt: skip


def _row(seed: int, s: dict[str, Any]) -> str:
    refused = s["refused_example"]
    return (
        f"| {seed} | {s['triggers']} | {s['stimulations_fired']} of {s['stimulations']} | "
        f"{s['stimulated_on_event']} of {s['stimulated_cells']} | "
        f"{s['reporter_activation_after']} | {s['stimulation_dose_mj']:.3f} | "
        f"{s['divisions_after_drug']} / {s['divisions_without_drug']} | "
        f"{refused['status']} `{refused['limit']}`, {refused['pumped']} pumped |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--positions", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--backend", default="ray")
    args = parser.parse_args()
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for seed in args.seeds:
            summary = run_stimulation_demo(
                Path(tmp),
                duration_s=args.duration_s,
                positions=args.positions,
                backend=args.backend,
                seed=seed,
                quiet=True,
            )
            runs[seed] = {k: summary[k] for k in KEYS}
            print(f"seed {seed}: " + ", ".join(f"{k}={summary[k]}" for k in KEYS), flush=True)
    print(
        "\n| seed | triggers | patterns fired | lit cells on the event | reporter after 300 s | "
        "pattern dose (mJ) | divisions after the drug / without it | refusal |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for seed, summary in runs.items():
        print(_row(seed, summary))
    lit = sum(r["stimulated_cells"] for r in runs.values())
    pooled = {
        "stimulated_on_event_fraction": round(
            sum(r["stimulated_on_event"] for r in runs.values()) / lit, 3
        )
        if lit
        else None,
        "every_pattern_fired": all(
            r["stimulations_fired"] == r["stimulations"] for r in runs.values()
        ),
        "divisions_after_over_without_max": max(
            r["divisions_after_drug"] / r["divisions_without_drug"] for r in runs.values()
        ),
    }
    print("pooled:", pooled)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": describe_machine(),
                "positions": args.positions,
                "duration_s": args.duration_s,
                "backend": args.backend,
                "runs": runs,
                "pooled": pooled,
            },
            indent=2,
        )
    )
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
