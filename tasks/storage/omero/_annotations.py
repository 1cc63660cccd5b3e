"""The key-value pairs scopeflow attaches to an OMERO image (pure functions, no OMERO)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._models import RegistrationRequest
from ._source import ImageSource

__all__ = ["NS_ACQUISITION", "NS_REGISTRATION", "acquisition_pairs", "registration_pairs"]

NS_ACQUISITION = "scopeflow.acquisition"  # the acquisition metadata, flattened
NS_REGISTRATION = "scopeflow.registration"  # run id and idempotency key; linked last = complete
KEY_FIELD = "scopeflow.key"


def acquisition_pairs(metadata: Mapping[str, Any]) -> list[list[str]]:
    """``metadata`` as OMERO map-annotation pairs: nested keys joined by '.', values as text."""
    pairs: list[list[str]] = []
    _flatten("", metadata, pairs)
    return pairs


def registration_pairs(
    request: RegistrationRequest, source: ImageSource, part: int, parts: int
) -> list[list[str]]:
    """Who registered this image and from where; ``scopeflow.key`` makes re-registering a no-op."""
    from scopeflow import __version__

    return [
        [KEY_FIELD, request.key],
        ["scopeflow.part", f"{part + 1}/{parts}"],
        ["scopeflow.run_id", request.run_id or ""],
        ["scopeflow.source", str(source.path)],
        ["scopeflow.version", __version__],
    ]


def _flatten(prefix: str, value: Any, out: list[list[str]]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, str):
        out.append([prefix, value])
    else:
        out.append([prefix, json.dumps(value, default=str)])
