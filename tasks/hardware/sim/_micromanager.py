"""The real-hardware path: a CMMCorePlus loaded from a Micro-Manager configuration file."""

from __future__ import annotations

from pathlib import Path

from pymmcore_plus import CMMCorePlus, find_micromanager

from scopeflow import ConfigurationError, MicroManagerNotInstalled

__all__ = ["load_micromanager_core"]


def load_micromanager_core(config_file: Path, mm_path: Path | None = None) -> CMMCorePlus:
    """Load ``config_file`` (a Micro-Manager .cfg) into a new :class:`CMMCorePlus`.

    ``mm_path`` is the Micro-Manager folder holding the device adapters; by default it is
    found the way pymmcore-plus finds it (MICROMANAGER_PATH, then ``mmcore install``'s folder).
    """
    config_file = Path(config_file).expanduser()
    if not config_file.is_file():
        raise ConfigurationError(
            f"Micro-Manager config file not found: {config_file}; pass the path of an "
            "existing .cfg file (save one from Micro-Manager's Hardware Configuration Wizard)"
        )
    if mm_path is not None:
        mm_dir = Path(mm_path).expanduser()
        if not mm_dir.is_dir():
            raise MicroManagerNotInstalled(
                f"Micro-Manager was not found at {mm_dir}: pass the folder of an existing "
                "install, or install it with `mmcore install`"
            )
    else:
        found = find_micromanager()
        if not found:
            raise MicroManagerNotInstalled(
                "Micro-Manager was not found: install it with `mmcore install`, or pass its "
                "folder (mm_path) or set MICROMANAGER_PATH to it"
            )
        mm_dir = Path(found)
    core = CMMCorePlus(mm_path=str(mm_dir))
    try:
        core.loadSystemConfiguration(str(config_file))
    except Exception as e:
        raise ConfigurationError(
            f"could not load Micro-Manager config {config_file} with adapters from {mm_dir}: {e}"
        ) from e
    return core
