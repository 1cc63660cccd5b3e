"""Run pymmcore-plus's ``OMEZarrWriter`` over given frames; print ``{"wall_s", "cpu_s"}``.

Runs in a separate venv holding ``pymmcore-plus`` and ``zarr<3`` (the writer uses the zarr v2
API), e.g. ``python3 -m venv /tmp/zarr2venv && /tmp/zarr2venv/bin/pip install
pymmcore-plus==0.18.1 'zarr<3' numpy``. Usage: ``python _pmm_zarr2_child.py FRAMES.npy OUT COUNT
none|zstd`` where FRAMES.npy holds a ``(k, y, x)`` stack that is cycled through.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np


def main() -> None:
    npy, out, count, compression = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    warnings.simplefilter("ignore", FutureWarning)  # the handlers module announces its move
    import numcodecs
    import useq
    import zarr  # noqa: F401 - imported before the clock starts, as in the parent's cases
    from pymmcore_plus.mda.handlers import OMEZarrWriter

    stack = np.load(npy)
    data = [np.ascontiguousarray(plane) for plane in stack]
    if compression == "none":
        kwargs = {"compressor": None}
    elif compression == "zstd":
        kwargs = {"compressor": numcodecs.Zstd(level=1, checksum=False)}
    else:
        raise SystemExit(f"unknown compression {compression!r}; use none or zstd")
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": count})
    events = list(seq)
    wall, cpu = time.perf_counter(), time.process_time()
    writer = OMEZarrWriter(out, array_kwargs=kwargs)  # type: ignore[arg-type]
    writer.sequenceStarted(seq, {})  # type: ignore[arg-type]
    for event in events:
        writer.frameReady(data[event.index["t"] % len(data)], event, {})  # type: ignore[arg-type]
    writer.sequenceFinished(seq)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall_s": wall, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
