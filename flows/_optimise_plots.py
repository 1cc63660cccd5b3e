"""The optimisation flow's pictures: the score per trial against the grid's optimum, and the
parameter landscape (exposure x intensity, log axes, one panel per binning)."""

from __future__ import annotations

import io
import math
from typing import Any

from tasks.decisions import SearchSpace

__all__ = ["render_history_png", "render_landscape_png"]

_W, _H, _M = 720, 360, 50
_TRIAL, _BEST, _GRID = (40, 90, 200), (230, 60, 60), (60, 160, 60)


def render_history_png(scores: list[float], grid_best: float | None) -> bytes:
    """Dots: each trial's score; red: the best so far; green: the grid's optimum (dashed: 95 %
    of it)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    values = [*scores, *([grid_best] if grid_best is not None else [])] or [0.0, 1.0]
    lo, hi = 0.0, max(max(values) * 1.05, 1e-3)  # a score below 0 sits on the axis
    n = max(len(scores), 2)

    def xy(k: float, v: float) -> tuple[float, float]:
        x = _M + k / (n - 1) * (_W - 2 * _M)
        return x, _H - _M - (max(v, lo) - lo) / (hi - lo) * (_H - 2 * _M)

    draw.rectangle((_M, _M, _W - _M, _H - _M), outline="black")
    if grid_best is not None:
        for level, dash in ((grid_best, 1), (0.95 * grid_best, 6)):
            y = xy(0, level)[1]
            for x in range(_M, _W - _M, 2 * dash + 2):
                draw.line((x, y, x + (dash if dash > 1 else 12), y), fill=_GRID, width=2)
        draw.text((_W - _M - 150, xy(0, grid_best)[1] - 14), "grid optimum", fill=_GRID)
    best = -math.inf
    path = []
    for k, v in enumerate(scores):
        x, y = xy(k, v)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=_TRIAL)
        best = max(best, v)
        path.append(xy(k, best))
    if len(path) > 1:
        draw.line(path, fill=_BEST, width=2)
    draw.text((_M, _H - _M + 8), f"trial 1 .. {len(scores)}", fill="black")
    draw.text((_M, 8), f"score (quality - dose penalty), 0 .. {hi:.2f}", fill="black")
    return _png(image)


def render_landscape_png(
    grid: list[dict[str, Any]], trials: list[dict[str, Any]], space: SearchSpace
) -> bytes:
    """Grid points as squares, optimiser trials as circles, coloured by score (dark to
    yellow); the best of each outlined in red."""
    from PIL import Image, ImageDraw

    panels = list(space.binnings)
    size = 320
    image = Image.new("RGB", (len(panels) * (size + _M) + _M, size + 2 * _M), "white")
    draw = ImageDraw.Draw(image)
    scores = [t["score"] for t in (*grid, *trials)] or [0.0, 1.0]
    lo, hi = max(0.0, min(scores)), max(scores)  # scores below 0 all dark
    (e0, e1), (i0, i1) = space.exposure_ms, space.intensity_pct
    best = {id(max(s, key=lambda t: t["score"])) for s in (grid, trials) if s}
    for p, binning in enumerate(panels):
        left = _M + p * (size + _M)
        draw.rectangle((left, _M, left + size, _M + size), outline="black")
        draw.text((left, _M - 16), f"binning {binning}", fill="black")
        draw.text((left, _M + size + 6), f"exposure {e0:g}-{e1:g} ms (log)", fill="black")

        def xy(t: dict[str, Any], left: int = left) -> tuple[float, float]:
            fx = math.log(t["exposure_ms"] / e0) / math.log(e1 / e0)
            fy = math.log(t["intensity_pct"] / i0) / math.log(i1 / i0)
            return left + fx * size, _M + size - fy * size

        for points, square in ((grid, True), (trials, False)):
            for t in points:
                if int(t["binning"]) != binning:
                    continue
                x, y = xy(t)
                box = (x - 5, y - 5, x + 5, y + 5)
                colour = _colour((t["score"] - lo) / ((hi - lo) or 1.0))
                outline = (230, 0, 0) if id(t) in best else None
                if square:
                    draw.rectangle(box, fill=colour, outline=outline, width=2)
                else:
                    draw.ellipse(box, fill=colour, outline=outline or "white", width=2)
    draw.text((4, 4), f"intensity {i0:g}-{i1:g} % (log, up); squares grid, circles optimiser; "
              f"score {lo:.2f} dark .. {hi:.2f} yellow", fill="black")  # fmt: skip
    return _png(image)


def _colour(f: float) -> tuple[int, int, int]:
    f = min(max(f, 0.0), 1.0)
    return (int(40 + 215 * f), int(20 + 200 * f), int(90 - 60 * f))


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
