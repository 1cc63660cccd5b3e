"""The event-triggered flow's picture: one row per position along the sample's time, a tick per
time point (grey gentle, red fast), and optional marks (e.g. true divisions) in yellow."""

from __future__ import annotations

import io

__all__ = ["render_timeline_png"]

_WIDTH, _ROW, _LEFT = 900, 36, 140
_GENTLE, _FAST, _MARK = (150, 150, 150), (230, 60, 60), (250, 210, 40)


def render_timeline_png(
    positions: dict[str, list[tuple[float, int, int]]],
    marks: dict[str, list[float]] | None = None,
) -> bytes:
    """``positions``: name -> (sample time s, mode 0/1, time point) per detection frame."""
    from PIL import Image, ImageDraw

    marks = marks or {}
    times = [t for rows in positions.values() for t, _, _ in rows]
    times += [t for ts in marks.values() for t in ts]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    span = max(t1 - t0, 1e-9)
    height = _ROW * (len(positions) + 1)
    image = Image.new("RGB", (_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)

    def x_of(t: float) -> float:
        return _LEFT + (t - t0) / span * (_WIDTH - _LEFT - 10)

    for k, (name, rows) in enumerate(positions.items()):
        y = _ROW * k + 8
        draw.text((6, y + 8), name[:20], fill="black")
        for t in marks.get(name, []):
            draw.rectangle((x_of(t) - 2, y, x_of(t) + 2, y + _ROW - 10), fill=_MARK)
        for t, mode, _ in rows:
            colour, top = (_FAST, y) if mode else (_GENTLE, y + 8)
            draw.line((x_of(t), top, x_of(t), y + _ROW - 10), fill=colour, width=2)
    footer = _ROW * len(positions) + 10
    draw.text(
        (_LEFT, footer),
        f"sample time {t0:.0f}-{t1:.0f} s; grey gentle, red fast, yellow marks",
        fill="black",
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
