"""What one registration asks for and what OMERO answered: frozen, JSON-round-trippable models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["KEY_PATTERN", "RegistrationRequest", "RegistrationResult"]

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # safe as a file name on every platform


class RegistrationRequest(BaseModel):
    """Register the image(s) at ``path`` in ``project`` / ``dataset``.

    ``path`` is an OME-Zarr image (``*.ome.zarr``) or a folder of them (an edge journal: one
    OMERO image per series store). ``metadata`` becomes key-value pairs on each image.
    ``key`` makes the registration idempotent: a second registration with the same key returns
    the first one's images instead of importing again. Derived from the content when not given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["omero-registration"] = "omero-registration"
    path: Path
    project: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    run_id: str | None = Field(None, description="The scopeflow run (Prefect flow run) id")
    name: str | None = Field(None, description="OMERO image name; the store's name when unset")
    metadata: dict[str, Any] = Field(default_factory=dict)
    key: str = Field("", pattern=rf"{KEY_PATTERN}|^$")

    @model_validator(mode="after")
    def _derive_key(self) -> RegistrationRequest:
        if not self.key:
            basis = json.dumps(
                [str(self.path), self.project, self.dataset, self.run_id, self.name],
                separators=(",", ":"),
            )
            object.__setattr__(self, "key", hashlib.sha256(basis.encode()).hexdigest()[:32])
        return self


class RegistrationResult(BaseModel):
    """OMERO's answer: the ids of the project, dataset and the images created (or found)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["omero-result"] = "omero-result"
    key: str
    project_id: int
    dataset_id: int
    image_ids: tuple[int, ...]
    server: str = Field(description="host:port of the OMERO server (or the stand-in)")
    reused: bool = Field(False, description="True when the key was registered before")
