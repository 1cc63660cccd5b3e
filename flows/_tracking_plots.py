"""The tracking flow's pictures: each followed path over the overview mosaic the positions came
from (or, without one, over its position's last frame), and the centring error over time
against the 10 %-of-field line."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import Frame
from tasks.decisions import FrameGeometry

from ._targeted_summary import MosaicCanvas, mosaic_canvas

__all__ = ["render_centring_error_png", "render_paths_over_mosaic_png", "render_paths_png"]

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


def render_paths_over_mosaic_png(positions: list[dict[str, Any]], mosaic_path: Path) -> bytes:
    """Left: the whole overview mosaic (stage coordinates), each position's field of view
    boxed and numbered in its colour. Right: one close-up of the mosaic per position, around
    its followed cell's path (drawn from a dot at the start to a ring at the end), with a
    scale bar: a path of tens of µm is a few pixels on the whole mosaic."""
    from PIL import Image, ImageDraw

    mosaic = mosaic_canvas(mosaic_path, max_side=2 * _PANEL)
    overview = Image.fromarray(mosaic.pixels).convert("RGB")
    draw = ImageDraw.Draw(overview)
    for k, position in enumerate(positions):
        colour = _COLOURS[k % len(_COLOURS)]
        path = _path_um(position)
        if not len(path):
            continue
        fov = position.get("fov_um") or 100.0
        cx, cy = mosaic.to_px(*path[-1])
        half = fov / 2 / mosaic.um_per_px
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=colour, width=2)
        label_x = min(max(cx - half + 4, 2), overview.size[0] - 24)
        label_y = min(max(cy - half + 2, 2), overview.size[1] - 20)
        draw.text((label_x, label_y), str(k + 1), fill=colour, font=_font(16))
    draw.text((6, 6), "overview mosaic; boxes: tracked fields", fill=(255, 255, 0), font=_font(15))
    _scale_bar(draw, overview.size, mosaic.um_per_px)
    cols = 2 if len(positions) > 3 else 1
    rows = max(1, -(-len(positions) // cols))
    side = max(overview.size[1] // rows, 160)
    canvas = Image.new("RGB", (overview.size[0] + cols * side, max(overview.size[1], rows * side)))
    canvas.paste(overview, (0, 0))
    for k, position in enumerate(positions):
        panel = _close_up(mosaic, position, k, side)
        canvas.paste(panel, (overview.size[0] + (k % cols) * side, (k // cols) * side))
    return _png(canvas)


def _close_up(mosaic: MosaicCanvas, position: dict[str, Any], k: int, side: int) -> Any:
    """The mosaic around one position's path, enlarged to ``side`` pixels, the path over it."""
    from PIL import Image, ImageDraw

    colour = _COLOURS[k % len(_COLOURS)]
    path = _path_um(position)
    fov = position.get("fov_um") or 100.0
    if len(path):
        centre = (path.min(axis=0) + path.max(axis=0)) / 2
        span = max(fov, float(np.ptp(path, axis=0).max()) * 1.5)
    else:
        centre, span = np.zeros(2), fov
    x0, y0 = centre - span / 2
    c0, r0 = (int(v) for v in mosaic.to_px(x0, y0))
    n = max(2, round(span / mosaic.um_per_px))
    crop = np.zeros((n, n), np.uint8)
    rs, cs = slice(max(r0, 0), max(r0 + n, 0)), slice(max(c0, 0), max(c0 + n, 0))
    piece = mosaic.pixels[rs, cs]
    crop[
        rs.start - r0 : rs.start - r0 + piece.shape[0],
        cs.start - c0 : cs.start - c0 + piece.shape[1],
    ] = piece
    panel = Image.fromarray(crop).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(panel)
    scale = side / span
    points = [(float((x - x0) * scale), float((y - y0) * scale)) for x, y in path]
    if len(points) > 1:
        draw.line(points, fill=colour, width=3)
    if points:
        (sx, sy), (ex, ey) = points[0], points[-1]
        draw.ellipse((sx - 4, sy - 4, sx + 4, sy + 4), fill=colour)
        draw.ellipse((ex - 7, ey - 7, ex + 7, ey + 7), outline=(255, 255, 0), width=2)
    draw.rectangle((0, 0, side - 1, side - 1), outline=colour, width=2)
    label = f"{k + 1}  {position['name']}: {len(path)} time points"
    if position.get("divisions_followed"):
        label += f", {position['divisions_followed']} division(s)"
    draw.text((6, 6), label, fill=(255, 255, 0), font=_font(15))
    _scale_bar(draw, (side, side), 1 / scale)
    return panel


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _path_um(position: dict[str, Any]) -> np.ndarray:
    """The followed cell's centres (stage µm) in time order, (n, 2)."""
    path = sorted(position["path"].items(), key=lambda item: int(item[0]))
    return np.array([p for _, p in path], dtype=float).reshape(-1, 2)


def _scale_bar(draw: Any, size: tuple[int, int], um_per_px: float) -> None:
    """A bar of a round length, about a fifth of the width, bottom left."""
    target = size[0] / 5 * um_per_px
    length = max(
        v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if v <= max(target, 1)
    )
    px = length / um_per_px
    x, y = 10, size[1] - 14
    draw.line((x, y, x + px, y), fill=(255, 255, 255), width=3)
    draw.text((x, y - 18), f"{length} um", fill=(255, 255, 255), font=_font(14))


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
