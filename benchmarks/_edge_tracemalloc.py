"""The edge agent under tracemalloc: ``python _edge_tracemalloc.py SNAPSHOT_PREFIX serve-args...``.

SIGUSR1 writes a snapshot to ``SNAPSHOT_PREFIX.<n>`` (n = 0, 1, ...); used by
``soak_tracemalloc.py`` to find what grows per frame.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc

from scopeflow.cli import app


def main() -> None:
    prefix = sys.argv[1]
    taken = [0]

    def snapshot(signum: int, frame: object) -> None:
        gc.collect()
        path = f"{prefix}.{taken[0]}"
        tracemalloc.take_snapshot().dump(path + ".partial")
        os.replace(path + ".partial", path)
        taken[0] += 1

    tracemalloc.start(12)
    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["scopeflow", *sys.argv[2:]]
    app()


if __name__ == "__main__":
    main()
