"""Soak: hours-long acquisition through the edge, its journal and a consumer; memory must stay flat.

The edge agent runs as a process (simulated 512x512 camera, journal on); this script keeps its
queue fed with 20 fps time-lapse sequences (``--fps``) for ``--minutes`` (default 30), and a
consumer process reads every frame over the TCP stream with checksums verified. Every
``--sample-s`` seconds the resident memory (RSS) of the edge and the consumer is sampled.

Reported: the RSS slope of each (MiB per hour, least squares over the samples after the first
``--warmup-s`` seconds: caches and the journal's first chunks fill there), frames expected,
journaled and received, drops (expected - journaled, and journaled - received), gaps and
repeats seen by the consumer, the frame rate achieved. Not in CI (it runs for minutes).

    python benchmarks/soak.py [--minutes 30] [--fps 20] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import describe_machine

from tasks.hardware import EdgeClient, EdgeProcess

RESULTS = Path(__file__).parent / "results" / "soak.json"
CHUNK_S = 30.0  # one submitted sequence: 30 s of frames
# generous: on a loaded shared machine the edge may answer late; how late is reported
HTTP_TIMEOUT_S = 300.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_mib_per_h(samples: list[tuple[float, float]], warmup_s: float) -> float | None:
    kept = [(t, m) for t, m in samples if t >= warmup_s]
    if len(kept) < 3:
        return None
    t, m = np.array(kept).T
    return float(np.polyfit(t / 3600.0, m, 1)[0])


def half_slopes(samples: list[tuple[float, float]], warmup_s: float) -> list[float | None]:
    """The slope in each half of the time after warm-up (a growth that decelerates shows)."""
    end = samples[-1][0] if samples else 0.0
    middle = (warmup_s + end) / 2
    first = [(t, m) for t, m in samples if warmup_s <= t <= middle]
    return [slope_mib_per_h(first, warmup_s), slope_mib_per_h(samples, middle)]


def consume(url: str, token_file: str, stop: int, progress: str) -> None:
    """The consumer process: every frame from 0 to ``stop`` over TCP, checksums verified."""
    received = repeats = 0
    last = -1
    with EdgeClient(url, token_file=Path(token_file), timeout=HTTP_TIMEOUT_S) as client:
        frames = client.frames(
            0, stop=stop, transport="tcp", verify=True, reconnect_timeout=HTTP_TIMEOUT_S
        )
        for frame in frames:
            repeats += frame.index <= last
            last = max(last, frame.index)
            received += 1
            if received % 200 == 0:
                Path(progress).write_text(json.dumps({"received": received, "last": last}))
    Path(progress).write_text(json.dumps({"received": received, "last": last, "repeats": repeats}))


def run(minutes: float, fps: float, size: int, sample_s: float, warmup_s: float) -> dict:
    total = round(minutes * 60 * fps)
    per_chunk = round(CHUNK_S * fps)
    workdir = Path(tempfile.mkdtemp(prefix="scopeflow-soak-"))
    progress = workdir / "consumer.json"
    edge_rss: list[tuple[float, float]] = []
    consumer_rss: list[tuple[float, float]] = []
    try:
        with EdgeProcess(workdir / "edge", extra_args=["--camera-size", str(size)]) as edge:
            assert edge.pid is not None
            consumer = subprocess.Popen(
                [sys.executable, __file__, "--consume", edge.url, str(edge.token_file),
                 str(total), str(progress)]
            )  # fmt: skip
            with EdgeClient(edge.url, token_file=edge.token_file, timeout=HTTP_TIMEOUT_S) as client:
                submitted = 0
                slowest_state_s = 0.0
                t0 = time.monotonic()
                next_sample = 0.0
                while True:
                    asked = time.monotonic()
                    state = client.state()
                    slowest_state_s = max(slowest_state_s, time.monotonic() - asked)
                    if submitted < total and state.queue_depth < per_chunk:
                        n = min(per_chunk, total - submitted)
                        client.submit_sequence(
                            {
                                "channels": [{"config": "DAPI", "exposure": 5.0}],
                                "time_plan": {"interval": 1.0 / fps, "loops": n},
                            },
                            command_id=f"soak-{submitted}",
                        )
                        submitted += n
                    now = time.monotonic() - t0
                    if now >= next_sample:
                        edge_rss.append((now, rss_mib(edge.pid)))
                        if consumer.poll() is None:
                            consumer_rss.append((now, rss_mib(consumer.pid)))
                        next_sample += sample_s
                    if submitted >= total and state.queue_depth == 0 and state.run_state == "idle":
                        break
                    time.sleep(0.5)
                elapsed = time.monotonic() - t0
                state = client.wait_until_idle()
            consumer.wait(timeout=300)
            seen = json.loads(progress.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    journaled = state.frames_journaled
    return {
        "minutes": minutes,
        "fps_requested": fps,
        "fps_achieved": journaled / elapsed,
        "size": size,
        "frames_expected": total,
        "frames_journaled": journaled,
        "frames_received": seen["received"],
        "dropped_before_journal": total - journaled,
        "dropped_after_journal": journaled - seen["received"],
        "repeated": seen.get("repeats"),
        "slowest_state_answer_s": slowest_state_s,
        "load_average_at_end": list(os.getloadavg()),
        "edge_rss_mib": {
            "first": edge_rss[0][1],
            "last": edge_rss[-1][1],
            "max": max(m for _, m in edge_rss),
            "slope_mib_per_h": slope_mib_per_h(edge_rss, warmup_s),
            "slope_halves_mib_per_h": half_slopes(edge_rss, warmup_s),
        },
        "consumer_rss_mib": {
            "first": consumer_rss[0][1],
            "last": consumer_rss[-1][1],
            "max": max(m for _, m in consumer_rss),
            "slope_mib_per_h": slope_mib_per_h(consumer_rss, warmup_s),
        },
        "samples": {
            "edge": [(round(t, 1), round(m, 2)) for t, m in edge_rss],
            "consumer": [(round(t, 1), round(m, 2)) for t, m in consumer_rss],
            "every_s": sample_s,
        },
        "warmup_s": warmup_s,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        url, token_file, stop, progress = sys.argv[2:6]
        consume(url, token_file, int(stop), progress)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    parser.add_argument("--note", default="", help="Recorded with the results (e.g. the load)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.minutes, args.fps, args.size, args.sample_s, args.warmup_s)
    result["note"] = args.note
    result["machine"] = describe_machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    samples = json.dumps(result["samples"])  # one line: hundreds of (t, MiB) pairs
    text = json.dumps({**result, "samples": "@samples@"}, indent=2)
    args.out.write_text(text.replace('"@samples@"', samples) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("samples", "machine")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
