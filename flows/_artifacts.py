"""What a flow shows in the Prefect UI: a PNG (kept beside the run's data too) and the
summary as a measure | value table."""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from prefect.artifacts import create_image_artifact, create_markdown_artifact

__all__ = ["publish_png", "publish_summary"]


def publish_png(png: bytes, *, key: str, description: str, path: Path | None = None) -> None:
    """``png`` as an image artifact; written to ``path`` first when given."""
    if path is not None:
        path.write_bytes(png)
    create_image_artifact(
        "data:image/png;base64," + base64.b64encode(png).decode(),
        key=key,
        description=description,
    )


def publish_summary(
    title: str,
    summary: Mapping[str, Any],
    *,
    key: str,
    description: str,
    leave_out: Collection[str] = ("stores",),
) -> None:
    """``summary`` as a markdown table under ``# title`` (``leave_out``: keys too long for it)."""
    create_markdown_artifact(
        f"# {title}\n\n| measure | value |\n| --- | --- |\n"
        + "".join(f"| {k} | {v} |\n" for k, v in summary.items() if k not in leave_out),
        key=key,
        description=description,
    )
