"""The event-triggered policy replayed in-process on the demo's simulator, over many seeds: a
line per seed (events imaged fast, dose against always-fast, why each miss was missed).

The replay itself (`flows/_event_replay.py`) is also what tests/test_event_replay.py scores.

    python benchmarks/event_replay.py [--seeds 0-11] [--start-delay-s 20] [--jobs 2] [--out F]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from flows import replay_event_seed

RESULTS = Path(__file__).parent / "results" / "event_replay.json"


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-11")
    parser.add_argument("--start-delay-s", type=float, default=20.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--params", default="{}", help="JSON: EventTriggeredParams fields")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    params = json.loads(args.params)
    started = time.perf_counter()
    seeds = _seeds(args.seeds)
    one = functools.partial(replay_event_seed, start_delay_s=args.start_delay_s, params=params)
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(one, seeds))
    for r in runs:
        why = [e["why"] for e in r["events"] if not e["captured"]]
        print(
            f"seed {r['seed']:2d}: {r['events_captured']}/{r['events_true']} fast, dose "
            f"{r['dose_ratio']:.2f}, triggers {r['triggers']}" + (f"; missed: {why}" if why else "")
        )
    true = sum(r["events_true"] for r in runs)
    captured = sum(r["events_captured"] for r in runs)
    doses = [r["dose_ratio"] for r in runs]
    print(
        f"seeds {args.seeds}: {captured}/{true} ({captured / max(true, 1):.0%}), dose "
        f"{min(doses):.2f}-{max(doses):.2f}, {time.perf_counter() - started:.0f} s"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"seeds": seeds, "start_delay_s": args.start_delay_s, "params": params}
        args.out.write_text(json.dumps(record | {"runs": runs}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
