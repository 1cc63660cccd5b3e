"""Where batch work runs: compute profiles by name, turned into a Dask or Ray cluster.

``open_runner(get_profile("local"))`` starts a LocalCluster; ``slurm`` / ``pbs`` profiles submit
dask-jobqueue batch jobs; ``ray`` connects to a Ray cluster (e.g. KubeRay). Nothing here
schedules work itself: the runners call the engines' own APIs. Live loops take the same
profiles: ``tasks.inference.backend_for_profile`` starts its Dask clusters with ``dask_cluster``.
"""

from __future__ import annotations

from ._dask_clusters import (
    dask_cluster,
    gpus_per_dask_worker,
    job_script,
    jobqueue_kwargs,
    wait_for_first_worker,
)
from ._open_runner import open_runner
from ._profiles import available_profiles, get_profile
from ._runner_core import ChunkRunner, GroupFailure, MapOutcome, group_items

__all__ = [
    "ChunkRunner",
    "GroupFailure",
    "MapOutcome",
    "available_profiles",
    "dask_cluster",
    "get_profile",
    "gpus_per_dask_worker",
    "group_items",
    "job_script",
    "jobqueue_kwargs",
    "open_runner",
    "wait_for_first_worker",
]
