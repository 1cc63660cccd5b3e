"""The QC report's pictures: each judged metric over the run (failed images in red, the
baseline's failure limit as a dashed line), and the failed images as labelled thumbnails."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

from tasks.qc import Verdict

__all__ = ["render_failed_thumbnails_png", "render_metric_plots_png"]

_W, _H = 420, 150
_PLOTTED = ("focus", "astigmatism", "snr_db", "brightness", "contrast", "saturated",
            "streak_z", "line_z", "drift_px", "overlap_ncc")  # fmt: skip
_LOG = {"focus", "astigmatism"}


def render_metric_plots_png(
    metrics: Sequence[tuple[int, str, Mapping[str, float]]], verdicts: Mapping[str, Verdict]
) -> bytes:
    """One panel per metric: the value of each image in arrival order."""
    from PIL import Image, ImageDraw

    names = [m for m in _PLOTTED if any(m in v for _, _, v in metrics)]
    cols = 2
    rows = max(1, -(-len(names) // cols))
    canvas = Image.new("RGB", (cols * _W, rows * _H), "white")
    draw = ImageDraw.Draw(canvas)
    for k, metric in enumerate(names):
        ox, oy = (k % cols) * _W, (k // cols) * _H
        points = [(i, v[metric], image) for i, image, v in metrics if metric in v]
        ys = np.array([_y(metric, p[1]) for p in points], dtype=float)
        limits = [
            _y(metric, c.threshold)
            for image in {p[2] for p in points}
            if image in verdicts
            for c in verdicts[image].checks
            if c.metric == metric and c.threshold is not None and c.basis == "learned"
        ]
        finite = ys[np.isfinite(ys)]
        if finite.size == 0:
            continue
        lo, hi = float(finite.min()), float(finite.max())
        if limits:
            limit = float(np.median(limits))
            lo, hi = min(lo, limit), max(hi, limit)
        else:
            limit = None
        span = hi - lo or 1.0
        x0, y0, pw, ph = ox + 44, oy + 18, _W - 56, _H - 34
        draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline=(180, 180, 180))
        draw.text((ox + 6, oy + 3), metric + (" (log10)" if metric in _LOG else ""), fill="black")
        n = max(1, max(p[0] for p in points) - min(p[0] for p in points))
        first = min(p[0] for p in points)

        box = (x0, y0, pw, ph, first, n, lo, span)

        if limit is not None:
            _, ly = _to_xy(box, first, limit)
            for x in range(int(x0), int(x0 + pw), 8):
                draw.line([x, ly, x + 4, ly], fill=(200, 60, 60))
        line = [_to_xy(box, p[0], y) for p, y in zip(points, ys, strict=True) if math.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=(70, 110, 200), width=1)
        for p, y in zip(points, ys, strict=True):
            if not math.isfinite(y):
                continue
            verdict = verdicts.get(p[2])
            bad = verdict is not None and any(
                c.metric == metric and c.level == "fail" for c in verdict.checks
            )
            x, yy = _to_xy(box, p[0], y)
            r = 3 if bad else 1.5
            draw.ellipse(
                [x - r, yy - r, x + r, yy + r], fill=(220, 40, 40) if bad else (40, 60, 140)
            )
        draw.text((ox + 2, y0 - 2), f"{_fmt(hi)}", fill=(90, 90, 90))
        draw.text((ox + 2, y0 + ph - 10), f"{_fmt(lo)}", fill=(90, 90, 90))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def render_failed_thumbnails_png(
    thumbnails: Mapping[str, np.ndarray], verdicts: Mapping[str, Verdict], *, limit: int = 24
) -> bytes | None:
    """The failed images' thumbnails (8-bit shown as recorded), each captioned with the
    metrics that failed; an unreadable file is a grey placeholder."""
    from PIL import Image, ImageDraw

    failed = [name for name, v in verdicts.items() if v.level == "fail"]
    if not failed:
        return None
    failed = failed[:limit]
    size, caption = 192, 30
    cols = min(6, len(failed))
    rows = -(-len(failed) // cols)
    canvas = Image.new("RGB", (cols * size, rows * (size + caption)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(failed):
        ox, oy = (k % cols) * size, (k // cols) * (size + caption)
        if name in thumbnails:
            thumb = _display(thumbnails[name])
            canvas.paste(Image.fromarray(thumb).convert("RGB").resize((size, size)), (ox, oy))
        else:
            draw.rectangle([ox, oy, ox + size - 1, oy + size - 1], fill=(60, 60, 60))
            draw.text((ox + 50, oy + size // 2 - 6), "unreadable", fill=(255, 120, 120))
        bad = [c for c in verdicts[name].anomalies if c.level == "fail"][:2]
        why = ", ".join(f"{c.metric}={c.value:.3g}" for c in bad) or "fail"
        draw.text((ox + 3, oy + size + 2), name[-28:], fill="black")
        draw.text((ox + 3, oy + size + 15), why, fill=(200, 30, 30))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_xy(box: tuple[float, ...], index: int, y: float) -> tuple[float, float]:
    x0, y0, pw, ph, first, n, lo, span = box
    return (x0 + (index - first) / n * pw, y0 + ph - (y - lo) / span * ph)


def _y(metric: str, value: float) -> float:
    if metric in _LOG:
        return math.log10(value) if value > 0 else -math.inf
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _display(image: np.ndarray) -> np.ndarray:
    """8-bit as it is (a brightness or contrast fault must show), else stretched."""
    if image.dtype == np.uint8:
        return image
    a = image.astype(np.float32)
    lo, hi = np.percentile(a, (0.5, 99.5))
    return (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
