"""What the edge agent keeps per frame: a short soak under tracemalloc, snapshots diffed.

The edge runs under tracemalloc (``_edge_tracemalloc.py``) with a small frame cache
(``SCOPEFLOW_EDGE__RING_MIB``, so it is full after a few dozen frames), fed like
``soak.py`` (sequences of 30 s at ``--fps``, a TCP consumer verifying checksums). After
``--warmup`` frames and then every ``--frames`` frames a snapshot is taken; the growth between
consecutive snapshots, per frame, is printed by traceback (largest first) and as a total.

    python benchmarks/soak_tracemalloc.py [--warmup 600] [--frames 1200] [--fps 40] [--size 256]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from tasks.hardware import EdgeClient

HERE = Path(__file__).parent
CHUNK_S = 30.0


def start_edge(workdir: Path, size: int, ring_mib: int) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", SCOPEFLOW_EDGE__RING_MIB=str(ring_mib))
    args = [
        sys.executable, str(HERE / "_edge_tracemalloc.py"), str(workdir / "snap"),
        "edge", "serve", "--simulate", "--host", "127.0.0.1", "--port", "0",
        "--data-dir", str(workdir / "edge"), "--camera-size", str(size),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("event") == "ready":
            return proc, message
    raise RuntimeError("the edge did not start")


def snapshot(proc: subprocess.Popen, workdir: Path, n: int) -> tracemalloc.Snapshot:
    proc.send_signal(signal.SIGUSR1)
    path = workdir / f"snap.{n}"
    while not path.exists():
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(path))


def streamed(workdir: Path, frames: int) -> None:
    """Wait until the consumer has received ``frames`` frames."""
    path = workdir / "consumer.json"
    while True:
        try:
            if json.loads(path.read_text())["received"] >= frames - frames % 200:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)


def run(warmup: int, frames: int, diffs: int, fps: float, size: int, top: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="scopeflow-tracemalloc-"))
    proc, ready = start_edge(workdir, size, ring_mib=16)
    per_chunk = round(CHUNK_S * fps)
    total = warmup + frames * diffs
    consumer = subprocess.Popen(
        [sys.executable, str(HERE / "soak.py"), "--consume", ready["url"], ready["token_file"],
         str(total), str(workdir / "consumer.json")]
    )  # fmt: skip
    marks = [warmup + frames * k for k in range(diffs + 1)]
    shots: list[tuple[int, tracemalloc.Snapshot]] = []
    result: dict = {"warmup": warmup, "frames": frames, "fps": fps, "size": size, "diffs": []}
    try:
        with EdgeClient(ready["url"], token_file=Path(ready["token_file"]), timeout=300) as client:
            submitted = 0
            while marks:
                state = client.state()
                if state.frames_journaled >= marks[0] or submitted >= marks[0]:
                    # snapshots only when idle and streamed out: no queued event, no frame
                    # in flight, so what differs between two snapshots is what is kept
                    if state.queue_depth == 0 and state.run_state == "idle":
                        streamed(workdir, state.frames_journaled)
                        marks.pop(0)
                        shots.append((state.frames_journaled, snapshot(proc, workdir, len(shots))))
                    time.sleep(0.5)
                    continue
                if state.queue_depth < per_chunk:
                    n = min(per_chunk, marks[0] - submitted)
                    client.submit_sequence(
                        {
                            "channels": [{"config": "DAPI", "exposure": 5.0}],
                            "time_plan": {"interval": 1.0 / fps, "loops": n},
                        },
                        command_id=f"soak-{submitted}",
                    )
                    submitted += n
                time.sleep(0.5)
        for (f0, s0), (f1, s1) in itertools.pairwise(shots):
            stats = s1.compare_to(s0, "traceback")
            grown = sum(s.size_diff for s in stats)
            print(f"\n== frames {f0} -> {f1}: {grown / (f1 - f0):.1f} B a frame in all ==")
            rows = []
            for stat in stats[:top]:
                if stat.size_diff == 0:
                    continue
                where = [f"{f.filename.split('/site-packages/')[-1]}:{f.lineno}"
                         for f in stat.traceback[-6:]]  # fmt: skip
                rows.append({"b_per_frame": stat.size_diff / (f1 - f0), "where": where})
                print(f"{stat.size_diff / (f1 - f0):8.1f} B/frame  {stat.count_diff:+d} blocks")
                for w in reversed(where):
                    print(f"      {w}")
            result["diffs"].append(
                {"from": f0, "to": f1, "b_per_frame": grown / (f1 - f0), "top": rows}
            )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        consumer.kill()
        consumer.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=600)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--diffs", type=int, default=2)
    parser.add_argument("--fps", type=float, default=40.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.warmup, args.frames, args.diffs, args.fps, args.size, args.top)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
