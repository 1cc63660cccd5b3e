"""Where a live flow's analysis runs, the same for every live flow: the compute profile's workers
when ``profile`` is set (local, SLURM, PBS, Ray/KubeRay, as for the batch flows), else
``backend``'s, else this process; the local fallback beside remote workers; the provenance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from scopeflow import ComputeProfile
from tasks.inference import BackendConfig, InferenceBackend, backend_for_profile, make_backend
from tasks.live import Analyzer, analyzer_for, local_model_choice

__all__ = ["LiveAnalysis", "live_analyzer", "local_model", "open_backend", "where_analysis_ran"]


class LiveAnalysis(Protocol):
    """The analysis fields a live flow's parameters carry."""

    @property
    def model(self) -> str: ...
    @property
    def model_options(self) -> Mapping[str, Any]: ...
    @property
    def backend(self) -> BackendConfig | None: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def fallback_model(self) -> str | None: ...
    @property
    def deadline_ms(self) -> float | None: ...

    def compute_profile(self) -> ComputeProfile | None: ...


def open_backend(params: LiveAnalysis) -> InferenceBackend | None:
    """The workers the model runs on; None: this process decides every frame."""
    profile = params.compute_profile()
    if profile is not None:
        return backend_for_profile(profile, params.model, dict(params.model_options))
    if params.backend is None:
        return None
    return make_backend(
        params.backend.model_copy(
            update={"model": params.model, "model_options": dict(params.model_options)}
        )
    )


def local_model(params: LiveAnalysis) -> tuple[str | None, dict[str, Any]]:
    """The model this process runs: the fallback beside remote workers, else the model."""
    remote = params.backend is not None or params.profile is not None
    return local_model_choice(
        params.model, params.model_options, params.fallback_model, remote=remote
    )


def live_analyzer(params: LiveAnalysis, backend: InferenceBackend | None) -> Analyzer:
    """The analyzer of a live phase: ``backend``'s workers under the deadline, the local
    model as fallback (or deciding every frame without workers)."""
    model, options = local_model(params)
    return analyzer_for(
        backend, deadline_ms=params.deadline_ms, local_model=model, local_options=options
    )


def where_analysis_ran(params: LiveAnalysis, backend: InferenceBackend | None) -> dict[str, Any]:
    """Engine, compute profile and workers of the backend (``local``: this process only)."""
    if backend is None:
        return {"engine": "local", "profile": None, "profile_kind": None, "workers": 0}
    info = backend.info()
    return {
        "engine": info["kind"],
        "profile": params.profile,
        "profile_kind": info.get("profile_kind"),
        "workers": info["workers"],
    }
