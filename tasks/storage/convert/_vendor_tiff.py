"""Pixel sizes from SEM/TEM vendors' private TIFF tags (ZEISS SmartSEM, Thermo Fisher/FEI)."""

from __future__ import annotations

from typing import Any

from ._model import PhysicalSize
from ._units import to_micrometer

__all__ = ["vendor_pixel_size"]


def vendor_pixel_size(tif: Any) -> tuple[str | None, dict[str, PhysicalSize], dict[str, Any]]:
    """``(vendor, {"y": ..., "x": ...}, vendor metadata)`` of a ``tifffile.TiffFile``.

    The pixel size is empty when the file carries none of the known vendor tags.
    """
    if tif.is_sem:
        sem: dict[str, Any] = tif.sem_metadata or {}
        for key in ("ap_image_pixel_size", "ap_pixel_size"):
            entry = sem.get(key)
            if isinstance(entry, tuple) and len(entry) == 3:
                um = _positive(to_micrometer(entry[1], entry[2]))
                if um is not None:
                    size = PhysicalSize(um, "micrometer")
                    return "ZEISS SEM", {"y": size, "x": size}, {"CZ_SEM": sem}
        return "ZEISS SEM", {}, {"CZ_SEM": sem}
    if tif.is_fei:
        fei: dict[str, Any] = tif.fei_metadata or {}
        for section in ("Scan", "EScan", "IScan"):
            scan = fei.get(section) or {}
            width = _positive(_metres_to_um(scan.get("PixelWidth")))
            height = _positive(_metres_to_um(scan.get("PixelHeight"))) or width
            if width is not None and height is not None:
                sizes = {
                    "y": PhysicalSize(height, "micrometer"),
                    "x": PhysicalSize(width, "micrometer"),
                }
                return "Thermo Fisher/FEI", sizes, {"FEI": fei}
        return "Thermo Fisher/FEI", {}, {"FEI": fei}
    return None, {}, {}


def _metres_to_um(value: object) -> float | None:
    try:
        return float(value) * 1e6  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None
