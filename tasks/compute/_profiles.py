"""Compute profiles by name: the built-in ones, overridden or extended by the settings file.

A profile says *where* a batch flow runs (``local``, ``slurm``, ``pbs``, ``ray``); the models are
defined in ``scopeflow._settings`` so that one TOML file holds them, e.g.::

    [compute_profiles.hpc]
    kind = "slurm"
    queue = "gpu"
    account = "imaging"
    jobs = 4
    gpus = 1
    memory = "32GiB"
    walltime = "04:00:00"
    prologue = ["module load cuda/12.4"]
"""

from __future__ import annotations

from scopeflow import (
    BUILTIN_COMPUTE_PROFILES,
    ComputeProfile,
    ConfigurationError,
    ScopeflowSettings,
)

__all__ = ["available_profiles", "get_profile"]


def available_profiles(settings: ScopeflowSettings | None = None) -> dict[str, ComputeProfile]:
    """Every profile by name: built-ins first, then the settings' own (which win on a clash)."""
    if settings is None:
        from scopeflow import load_settings

        settings = load_settings()
    return {**BUILTIN_COMPUTE_PROFILES, **settings.compute_profiles}


def get_profile(name: str, settings: ScopeflowSettings | None = None) -> ComputeProfile:
    """The profile called ``name``; ConfigurationError naming the choices when it is unknown."""
    profiles = available_profiles(settings)
    try:
        return profiles[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown compute profile {name!r}; available: {', '.join(sorted(profiles))}; "
            "define it under [compute_profiles.<name>] in the file named by SCOPEFLOW_CONFIG"
        ) from None
