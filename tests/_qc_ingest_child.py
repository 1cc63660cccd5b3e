"""Child processes for tests/test_qc_ingest.py: a slow microscope writer, and a QC watcher
that can be killed mid-run (run as ``python -m tests._qc_ingest_child MODE ARGS``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def slow_write(path: Path, source: Path, chunks: int, pause_s: float) -> None:
    """Write ``source``'s bytes to ``path`` in place, a chunk at a time (as SmartSEM does)."""
    data = source.read_bytes()
    step = len(data) // chunks + 1
    with path.open("wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i : i + step])
            fh.flush()
            last_write_ns = time.time_ns()
            time.sleep(pause_s)
    (path.parent / (path.name + ".written")).write_text(str(last_write_ns))


def watch(folder: Path, pause_s: float) -> None:
    """QC everything in ``folder`` (threads), slowly: the parent kills this mid-run."""
    from tasks.live import Analyzer, AnalyzerSettings, WatchedFolderSource
    from tasks.qc import QCConfig, QCJudge, QCWorkers, run_qc

    source = WatchedFolderSource(folder, poll_s=0.05, idle_stop_s=3.0)
    workers = QCWorkers("threads", workers=1)
    analyzer = Analyzer(workers, AnalyzerSettings(max_in_flight=1))

    def slowly(verdict: object) -> None:
        print("verdict", getattr(verdict, "image", ""), flush=True)
        time.sleep(pause_s)

    run_qc(source, analyzer, QCJudge(QCConfig(learn_images=6)), on_verdict=slowly)
    workers.close()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "write":
        slow_write(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "watch":
        watch(Path(sys.argv[2]), float(sys.argv[3]))
