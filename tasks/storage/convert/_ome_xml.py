"""Scene metadata (names, sizes, channels, plane times and positions) from an OME-XML document."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from scopeflow import ConversionError

from ._model import ChannelInfo, PhysicalSize, PlaneInfo
from ._units import to_micrometer, to_second

__all__ = ["ome_scenes"]


def ome_scenes(xml: str) -> list[dict[str, Any]]:
    """One dict per ``Image``: name, channels, physical_sizes, planes, acquired."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConversionError(f"the OME-XML is not well-formed XML ({exc})") from exc
    return [_image(image) for image in root if _local(image.tag) == "Image"]


def _image(image: ET.Element) -> dict[str, Any]:
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    out: dict[str, Any] = {"name": image.get("Name")}
    acquired = next((el.text for el in image if _local(el.tag) == "AcquisitionDate"), None)
    if acquired:
        out["acquired"] = acquired.strip()
    if pixels is None:
        return out
    sizes: dict[str, PhysicalSize] = {}
    for axis in ("X", "Y", "Z"):
        value = _float(pixels.get(f"PhysicalSize{axis}"))
        um = to_micrometer(value, pixels.get(f"PhysicalSize{axis}Unit")) if value else None
        if um is not None and um > 0:
            sizes[axis.lower()] = PhysicalSize(um, "micrometer")
    increment = _float(pixels.get("TimeIncrement"))
    seconds = to_second(increment, pixels.get("TimeIncrementUnit")) if increment else None
    if seconds is not None and seconds > 0:
        sizes["t"] = PhysicalSize(seconds, "second")
    out["physical_sizes"] = sizes
    out["channels"] = [
        ChannelInfo(ch.get("Name") or ch.get("Fluor") or f"C{i}", _rgb(ch.get("Color")))
        for i, ch in enumerate(el for el in pixels if _local(el.tag) == "Channel")
    ]
    out["planes"] = [_plane(el) for el in pixels if _local(el.tag) == "Plane"]
    return out


def _plane(plane: ET.Element) -> PlaneInfo:
    def position(axis: str) -> float | None:
        value = _float(plane.get(f"Position{axis}"))
        return None if value is None else to_micrometer(value, plane.get(f"Position{axis}Unit"))

    delta = _float(plane.get("DeltaT"))
    return PlaneInfo(
        t=int(plane.get("TheT", 0)),
        c=int(plane.get("TheC", 0)),
        z=int(plane.get("TheZ", 0)),
        delta_t_s=None if delta is None else to_second(delta, plane.get("DeltaTUnit")),
        position_x_um=position("X"),
        position_y_um=position("Y"),
        position_z_um=position("Z"),
    )


def _rgb(color: str | None) -> str:
    """OME colours are signed 32-bit RGBA integers; white when absent or unreadable."""
    try:
        value = int(color) & 0xFFFFFFFF  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "FFFFFF"
    return f"{value >> 8:06X}"


def _float(text: str | None) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
