"""The autofocus flow's picture: focus error against the sample's time, the autofocus run and
the static protocol, with the depth of field as a band around zero."""

from __future__ import annotations

import io

__all__ = ["render_focus_error_png"]

_W, _H, _LEFT, _TOP, _BOTTOM = 900, 420, 70, 30, 50
_SMART, _STATIC, _BAND = (40, 110, 220), (220, 70, 50), (215, 240, 215)


def render_focus_error_png(
    times_s: list[float], smart_um: list[float], static_um: list[float] | None, dof_um: float
) -> bytes:
    """Focus error (µm, stage z - in-focus z) per image frame; the band is +- dof_um / 2."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    values = [*smart_um, *(static_um or []), dof_um / 2, -dof_um / 2]
    top = max(abs(v) for v in values) * 1.1 or 1.0
    t0, t1 = (min(times_s), max(times_s)) if times_s else (0.0, 1.0)
    span = max(t1 - t0, 1e-9)

    def xy(t: float, v: float) -> tuple[float, float]:
        x = _LEFT + (t - t0) / span * (_W - _LEFT - 20)
        y = _TOP + (top - v) / (2 * top) * (_H - _TOP - _BOTTOM)
        return x, y

    _, y_hi = xy(t0, dof_um / 2)
    _, y_lo = xy(t0, -dof_um / 2)
    draw.rectangle((_LEFT, y_hi, _W - 20, y_lo), fill=_BAND)
    draw.line((*xy(t0, 0.0), *xy(t1, 0.0)), fill=(120, 120, 120))
    for series, colour in ((static_um, _STATIC), (smart_um, _SMART)):
        if series:
            points = [xy(t, v) for t, v in zip(times_s, series, strict=True)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    for v in (top / 1.1, dof_um / 2, 0.0, -dof_um / 2, -top / 1.1):
        _, y = xy(t0, v)
        draw.text((4, y - 6), f"{v:+.2f}", fill="black")
    draw.text(
        (_LEFT, _H - _BOTTOM + 12),
        f"sample time {t0 / 60:.0f}-{t1 / 60:.0f} min; focus error µm (stage z - in-focus z); "
        f"green: depth of field +-{dof_um / 2:.2f} µm",
        fill="black",
    )
    draw.text((_LEFT, _H - _BOTTOM + 28), "blue: autofocus   red: static (focus set once)",
              fill="black")  # fmt: skip
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
