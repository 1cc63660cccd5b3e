"""The uncertainty-triggered flow's pictures: the uncertainty over time per position with the
threshold and the frames really acquired, and one predicted-vs-acquired example."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["render_comparison_png", "render_uncertainty_png"]

_WIDTH, _ROW, _LEFT = 900, 60, 140
_LINE, _ACQUIRED, _THRESHOLD = (60, 60, 160), (220, 40, 40), (120, 120, 120)


def render_uncertainty_png(positions: dict[str, list[Any]], threshold: float) -> bytes:
    """``positions``: name -> records with ``t``, ``uncertainty`` and ``expensive_frame``; one
    row per position: the uncertainty (blue), the threshold (grey), acquired (red dots)."""
    from PIL import Image, ImageDraw

    times = [r.t for rows in positions.values() for r in rows] or [0]
    t_max = max(max(times), 1)
    top = max([r.uncertainty for rows in positions.values() for r in rows] + [threshold, 1e-6])
    top *= 1.1
    image = Image.new("RGB", (_WIDTH, _ROW * (len(positions) + 1)), "white")
    draw = ImageDraw.Draw(image)

    def xy(t: float, u: float, k: int) -> tuple[float, float]:
        y0 = _ROW * k + 6
        return _LEFT + t / t_max * (_WIDTH - _LEFT - 16), y0 + (1 - u / top) * (_ROW - 14)

    for k, (name, rows) in enumerate(positions.items()):
        draw.text((6, _ROW * k + _ROW // 2 - 6), name[:20], fill="black")
        a, b = xy(0, threshold, k), xy(t_max, threshold, k)
        for x in range(int(a[0]), int(b[0]), 8):
            draw.line((x, a[1], x + 4, a[1]), fill=_THRESHOLD)
        points = [xy(r.t, r.uncertainty, k) for r in rows]
        if len(points) > 1:
            draw.line(points, fill=_LINE, width=2)
        for r, (x, y) in zip(rows, points, strict=True):
            if r.expensive_frame is not None:
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=_ACQUIRED)
            else:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=_LINE)
    draw.text(
        (_LEFT, _ROW * len(positions) + 10),
        f"time points 0-{t_max}; blue uncertainty, dashed threshold {threshold:.3f}, "
        "red: expensive channel acquired",
        fill="black",
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def render_comparison_png(
    cheap: np.ndarray, predicted: np.ndarray, expensive: np.ndarray, title: str
) -> bytes:
    """Three panels side by side: the cheap frame, the predicted nuclei (outlines on the cheap
    frame), the expensive frame acquired at the same place."""
    from PIL import Image, ImageDraw
    from skimage.segmentation import find_boundaries

    def grey(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a, [1, 99.8])
        return (np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)

    base = grey(np.asarray(cheap, np.float64))
    outlined = np.stack([base] * 3, axis=-1)
    outlined[find_boundaries(predicted, mode="inner")] = (40, 220, 40)
    panels = [np.stack([base] * 3, -1), outlined, np.stack([grey(expensive)] * 3, -1)]
    h, w = base.shape
    canvas = Image.new("RGB", (3 * w + 20, h + 24), "white")
    for k, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (k * (w + 10), 24))
    ImageDraw.Draw(canvas).text(
        (4, 4), f"{title}   cheap | predicted nuclei | expensive acquired", fill="black"
    )
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
