"""Length and time units as OME-XML and vendors write them, converted to NGFF's."""

from __future__ import annotations

__all__ = ["to_micrometer", "to_second"]

_LENGTH_UM = {
    "pm": 1e-6,
    "Å": 1e-4,
    "A": 1e-4,
    "angstrom": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "μm": 1.0,  # Greek mu, which some writers use instead of the micro sign
    "micron": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "meter": 1e6,
}
_TIME_S = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def to_micrometer(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` (default µm, OME's default) as micrometres; None if unknown."""
    factor = _LENGTH_UM.get((unit or "µm").strip())
    return None if factor is None else float(value) * factor


def to_second(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` (default s, OME's default) as seconds; None if unknown."""
    factor = _TIME_S.get((unit or "s").strip())
    return None if factor is None else float(value) * factor
