"""``open_runner``: the Dask or Ray runner a compute profile asks for (importing that engine
only then)."""

from __future__ import annotations

from scopeflow import ComputeProfile, LocalComputeProfile, RayComputeProfile

from ._runner_core import ChunkRunner

__all__ = ["open_runner"]


def open_runner(profile: ComputeProfile) -> ChunkRunner:
    """Start (or connect to) the cluster ``profile`` describes and return its runner."""
    if isinstance(profile, RayComputeProfile) or (
        isinstance(profile, LocalComputeProfile) and profile.engine == "ray"
    ):
        from ._ray_runner import RayRunner

        return RayRunner(profile)
    from ._dask_runner import DaskRunner

    return DaskRunner(profile)
