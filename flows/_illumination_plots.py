"""The adaptive-illumination flow's pictures (PNG, drawn with Pillow):

- ``render_light_png``: per position over the time points, the light it was given (exposure x
  intensity, log scale, with exposure and intensity in the legend's last values) and the SNR
  its cell reached against the target;
- ``render_dose_png``: the cumulative light dose of the run against the static protocol's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

__all__ = ["render_dose_png", "render_light_png"]

_W, _PANEL, _LEFT, _RIGHT, _TOP = 900, 260, 70, 190, 28
_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip

Series = tuple[str, Sequence[tuple[float, float]]]


def render_light_png(
    positions: dict[str, list[dict]], target_snr: float, fixed_light: float | None = None
) -> bytes:
    """``positions``: name -> frames (``t``, ``light``, ``snr``, ``exposure_ms``,
    ``intensity_percent``)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (_W, 2 * _PANEL + 20), "white")
    draw = ImageDraw.Draw(image)
    light = [
        (f"{n} ({rows[-1]['exposure_ms']:g} ms, {rows[-1]['intensity_percent']:g} %)" if rows
         else n, [(r["t"], r["light"]) for r in rows])
        for n, rows in positions.items()
    ]  # fmt: skip
    snr = [(n, [(r["t"], r["snr"]) for r in rows if r["snr"] is not None]) for n, rows in
           positions.items()]  # fmt: skip
    _panel(draw, 0, "light per frame (ms at 100 %), log", light, log=True,
           guide=(fixed_light, "static") if fixed_light else None)  # fmt: skip
    _panel(draw, _PANEL, "measured SNR of the followed cell", snr, log=False,
           guide=(target_snr, "target"))  # fmt: skip
    draw.text((_LEFT, 2 * _PANEL + 4), "time point", fill="black")
    return _png(image)


def render_dose_png(cumulative: dict[str, Sequence[tuple[float, float]]]) -> bytes:
    """``cumulative``: label (e.g. "adaptive", "static") -> (time point, dose mJ so far)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (_W, _PANEL + 20), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, 0, "cumulative light dose (mJ)", list(cumulative.items()), log=False)
    draw.text((_LEFT, _PANEL + 4), "time point", fill="black")
    return _png(image)


def _panel(
    draw: object,
    top: int,
    title: str,
    series: list[Series],
    *,
    log: bool,
    guide: tuple[float, str] | None = None,
) -> None:
    d = draw  # PIL.ImageDraw.ImageDraw
    x0, x1 = _LEFT, _W - _RIGHT
    y0, y1 = top + _TOP, top + _PANEL - 24
    d.text((x0, top + 6), title, fill="black")  # type: ignore[attr-defined]
    d.rectangle((x0, y0, x1, y1), outline=(180, 180, 180))  # type: ignore[attr-defined]
    points = [p for _, pts in series for p in pts if p[1] is not None]
    values = [v for _, v in points if not log or v > 0]
    if guide is not None:
        values.append(guide[0])
    if not points or not values:
        return
    tx = [t for t, _ in points]
    t_lo, t_hi = min(tx), max(max(tx), min(tx) + 1)

    def f(v: float) -> float:
        return math.log10(max(v, 1e-12)) if log else v

    v_lo, v_hi = min(map(f, values)), max(map(f, values))
    if not log:
        v_lo = min(v_lo, 0.0)
    v_hi = v_hi if v_hi > v_lo else v_lo + 1.0

    def xy(t: float, v: float) -> tuple[float, float]:
        return (
            x0 + (t - t_lo) / (t_hi - t_lo) * (x1 - x0),
            y1 - (f(v) - v_lo) / (v_hi - v_lo) * (y1 - y0),
        )

    for t in (t_lo, t_hi):
        d.text((xy(t, values[0])[0] - 4, y1 + 4), f"{t:g}", fill="black")  # type: ignore[attr-defined]
    for k in range(3):
        v = v_lo + k * (v_hi - v_lo) / 2
        label = f"{10**v:.3g}" if log else f"{v:.3g}"
        d.text((4, y1 - k * (y1 - y0) / 2 - 6), label, fill="black")  # type: ignore[attr-defined]
    if guide is not None:
        gy = xy(t_lo, guide[0])[1]
        d.line((x0, gy, x1, gy), fill=(0, 0, 0), width=1)  # type: ignore[attr-defined]
        d.text((x1 - 60, gy - 12), guide[1], fill="black")  # type: ignore[attr-defined]
    for i, (name, pts) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        line = [xy(t, v) for t, v in pts if v is not None and (not log or v > 0)]
        if len(line) > 1:
            d.line(line, fill=colour, width=2)  # type: ignore[attr-defined]
        for x, y in line:
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)  # type: ignore[attr-defined]
        d.text((x1 + 8, y0 + 14 * i), name[:30], fill=colour)  # type: ignore[attr-defined]


def _png(image: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")  # type: ignore[attr-defined]
    return out.getvalue()
