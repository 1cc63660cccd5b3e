"""The tracking flow's pictures: each followed path over its position's last frame, and the
centring error over time against the 10 %-of-field line."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from scopeflow import Frame
from tasks.decisions import FrameGeometry

__all__ = ["render_centring_error_png", "render_paths_png"]

_PANEL = 384
_COLOURS = ((230, 60, 60), (60, 140, 230), (40, 170, 90), (220, 150, 30))


def render_paths_png(positions: list[dict[str, Any]], last_frames: dict[str, Frame]) -> bytes:
    """One panel per position: its last frame (binned, contrast stretched) with the followed
    cell's path (stage µm, mapped through that frame's pixel affine) drawn over it."""
    from PIL import Image, ImageDraw

    cols = min(4, max(1, len(positions)))
    rows = -(-len(positions) // cols)
    canvas = Image.new("RGB", (cols * _PANEL, rows * _PANEL), "black")
    for k, position in enumerate(positions):
        frame = last_frames.get(position["name"])
        ox, oy = (k % cols) * _PANEL, (k // cols) * _PANEL
        if frame is None:
            continue
        panel = Image.fromarray(_stretch(frame.pixels)).convert("RGB").resize((_PANEL, _PANEL))
        draw = ImageDraw.Draw(panel)
        h = frame.header
        height, width = frame.pixels.shape
        geometry = FrameGeometry(h.stage.x, h.stage.y, width, height, h.pixel_affine or (
            h.pixel_size_um, 0.0, 0.0, 0.0, h.pixel_size_um, 0.0))  # fmt: skip
        path = sorted(position["path"].items(), key=lambda item: int(item[0]))
        if path:
            xy = np.array([p for _, p in path], dtype=float)
            r, c = geometry.to_pixel(xy[:, 0], xy[:, 1])
            scale = _PANEL / max(width, height)
            points = [(float(cc * scale), float(rr * scale)) for rr, cc in zip(r, c, strict=True)]
            if len(points) > 1:
                draw.line(points, fill=_COLOURS[k % len(_COLOURS)], width=2)
            x, y = points[-1]
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline=(255, 255, 0), width=2)
        draw.text((6, 6), f"{position['name']}  ({len(path)} time points)", fill=(255, 255, 0))
        canvas.paste(panel, (ox, oy))
    return _png(canvas)


def render_centring_error_png(positions: list[dict[str, Any]], limit_um: float) -> bytes:
    """Centring error (µm) per time point, one line per position; dashed: the 10 % limit."""
    from PIL import Image, ImageDraw

    width, height, pad = 720, 300, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    series = [
        sorted((int(t), float(e)) for t, e in p["centring_error_um"].items()) for p in positions
    ]
    t_max = max((s[-1][0] for s in series if s), default=1) or 1
    e_max = max([limit_um * 1.5, *(e for s in series for _, e in s)])

    def at(t: float, e: float) -> tuple[float, float]:
        return (pad + t / t_max * (width - 2 * pad), height - pad - e / e_max * (height - 2 * pad))

    draw.rectangle((pad, pad, width - pad, height - pad), outline="grey")
    y_limit = at(0, limit_um)[1]
    for x in range(pad, width - pad, 12):
        draw.line((x, y_limit, x + 6, y_limit), fill=(200, 0, 0))
    draw.text((width - pad - 150, y_limit - 14), f"10 % of field: {limit_um:.1f} um", fill="red")
    for k, s in enumerate(series):
        if len(s) > 1:
            draw.line([at(t, e) for t, e in s], fill=_COLOURS[k % len(_COLOURS)], width=2)
        draw.text((pad + 6, pad + 6 + 14 * k), positions[k]["name"], fill=_COLOURS[k % 4])
    draw.text((pad, height - pad + 8), f"time point 0 .. {t_max}", fill="black")
    draw.text((4, pad - 16), f"centring error, um (max {e_max:.1f})", fill="black")
    return _png(image)


def _stretch(pixels: np.ndarray, factor: int = 2) -> np.ndarray:
    h, w = (d - d % factor for d in pixels.shape)
    binned = pixels[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    lo, hi = np.percentile(binned, [1, 99.7])
    return (np.clip((binned - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
