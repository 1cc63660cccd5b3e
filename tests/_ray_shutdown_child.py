"""Child process for tests/test_ray_shutdown.py: threads wait on slow Ray results while their
owner (a Ray inference backend, or Ray QC workers) closes and shuts down the Ray it started.

Prints one JSON line: what each waiter got, how many ``ray.get`` calls were running when
``ray.shutdown`` began (Ray ends the process when one is: ray-project/ray#19115), and whether
Ray is still initialised afterwards. Run as ``python -m tests._ray_shutdown_child OWNER``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import numpy as np
import ray

WAITERS = 3
DELAY_S = 20.0


def slow_measure(payload: Any, pixel_size_um: float | None, delay_s: float) -> dict[str, Any]:
    """A QC measure that takes ``delay_s``."""
    time.sleep(delay_s)
    return {"model_ms": delay_s * 1e3}


def _count_running_gets() -> dict[str, int]:
    """Wrap ``ray.get`` and ``ray.shutdown``: the gets running when the shutdown began."""
    seen = {"running": 0, "at_shutdown": -1}
    lock = threading.Lock()
    get, shutdown = ray.get, ray.shutdown

    def counted_get(*args: Any, **kwargs: Any) -> Any:
        with lock:
            seen["running"] += 1
        try:
            return get(*args, **kwargs)
        finally:
            with lock:
                seen["running"] -= 1

    def recorded_shutdown(*args: Any, **kwargs: Any) -> Any:
        with lock:
            seen["at_shutdown"] = seen["running"]
        return shutdown(*args, **kwargs)

    ray.get, ray.shutdown = counted_get, recorded_shutdown  # type: ignore[assignment]
    return seen


def _owner(kind: str) -> Any:
    if kind == "backend":
        from tasks.inference import BackendConfig, make_backend

        model = "tests.inference_test_models:SlowModel"
        config = BackendConfig(
            kind="ray", workers=1, model=model, model_options={"delay_s": DELAY_S}
        )
        return make_backend(config)
    from tasks.qc import QCWorkers

    return QCWorkers("ray", workers=1, measure=slow_measure, measure_args=(DELAY_S,))


def main(kind: str) -> None:
    owner = _owner(kind)
    assert owner.started_cluster if kind == "backend" else owner._own  # it shuts Ray down
    seen = _count_running_gets()
    frame = np.zeros((32, 32), np.uint16)
    futures = [owner.submit(frame) for _ in range(WAITERS)]
    outcomes: list[str] = []

    def wait(future: Any) -> None:
        try:
            future.result(timeout=600)
            outcomes.append("value")
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=wait, args=(f,), daemon=True) for f in futures]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every waiter inside its wait
    started = time.monotonic()
    owner.close()
    close_s = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=30)
    print(
        json.dumps(
            {
                "outcomes": outcomes,
                "gets_running_at_shutdown": seen["at_shutdown"],
                "close_s": close_s,
                "ray_initialized": ray.is_initialized(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
