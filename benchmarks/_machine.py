"""The machine description every benchmark records next to its numbers."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

__all__ = ["describe_machine"]


def describe_machine(**versions: str) -> dict[str, object]:
    """Platform, CPU model and count, memory, Python and numpy, plus ``versions`` given."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
        "numpy": np.__version__,
        **versions,
    }
