"""One settings tree for every role.

Each field can be set in code, by an environment variable with the ``SCOPEFLOW_`` prefix
(nested fields use ``__``: ``SCOPEFLOW_EDGE__PORT=9000``), or in a TOML file named by
``SCOPEFLOW_CONFIG`` (default ``./scopeflow.toml`` when it exists). Precedence: code, environment,
TOML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["EdgeServerSettings", "ScopeflowSettings", "load_settings"]


class EdgeServerSettings(BaseModel):
    """Settings of the edge agent service (`scopeflow edge serve`)."""

    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps it local")
    port: int = Field(8765, ge=0, le=65535, description="HTTP/WebSocket port (0 picks a free one)")
    stream_port: int = Field(
        0, ge=0, le=65535, description="Fast TCP frame-stream port (0 picks a free one)"
    )
    token_file: Path | None = Field(
        None, description="File holding the bearer token; generated under data_dir when unset"
    )
    data_dir: Path = Field(Path("scopeflow-data/edge"), description="Journal and command log root")
    envelope_file: Path | None = Field(
        None, description="Safety envelope (YAML or TOML); simulator defaults when unset"
    )
    journal_compression: Literal["none", "zstd", "lz4"] = Field(
        "none", description="Codec for journal chunks"
    )
    journal_prewrite: int = Field(
        2,
        ge=0,
        description="Chunk files pre-written ahead of the journal (page-cache warm-up); 0 = off",
    )
    ring_mib: int = Field(
        512, ge=16, description="Recent frames kept in memory for streaming; older come from disk"
    )
    shm_slots: int = Field(
        16, ge=0, description="Shared-memory ring slots for same-host consumers (0 turns it off)"
    )
    channel_group: str = Field("Channel", description="Micro-Manager config group of channels")
    objective_group: str = Field("Objective", description="Config group of objectives")
    intensity_property: tuple[str, str] = Field(
        ("Illumination", "Intensity"),
        description="(device, property) of the illumination intensity in percent",
    )


class ScopeflowSettings(BaseSettings):
    """The whole settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="SCOPEFLOW_", env_nested_delimiter="__", extra="ignore"
    )

    edge_url: str = Field("http://127.0.0.1:8765", description="Edge agent URL used by clients")
    edge_token: str | None = Field(None, description="Bearer token for the edge agent (secret)")
    edge_token_file: Path | None = Field(None, description="File holding the edge token")
    edge: EdgeServerSettings = Field(default_factory=EdgeServerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("SCOPEFLOW_CONFIG", "scopeflow.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: object) -> ScopeflowSettings:
    """Read the settings tree (code overrides win over environment and TOML)."""
    return ScopeflowSettings(**overrides)  # type: ignore[arg-type]
