"""The run id a flow uses when its params name none."""

from __future__ import annotations

import time

__all__ = ["default_run_id"]


def default_run_id(prefix: str) -> str:
    """``<prefix>-<Prefect flow run id>``, or ``<prefix>-<local time>`` outside a flow run."""
    from prefect.runtime import flow_run

    run = flow_run.id
    return f"{prefix}-{run}" if run else time.strftime(f"{prefix}-%Y%m%dT%H%M%S")
