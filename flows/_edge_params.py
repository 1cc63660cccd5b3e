"""Which microscope an acquisition flow drives: the parameters every such flow shares."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tasks.hardware import EdgeClient

__all__ = ["MicroscopeConnection"]


class MicroscopeConnection(BaseModel):
    """An edge agent by URL and token file, or a microscope by name from the settings; the run
    leases it for its whole length."""

    edge_url: str = "http://127.0.0.1:8765"
    edge_token_file: Path | None = None
    edge_ca_file: Path | None = Field(
        None, description="CA that signed an https edge's certificate (else the system's)"
    )
    microscope: str | None = Field(
        None,
        description="Microscope by name from the settings' registry ([microscopes.NAME]); "
        "wins over edge_url / edge_token_file / edge_ca_file",
    )
    lease_ttl_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="The run leases the microscope (holder: its run id); the lease runs out "
        "this long after the run's process dies",
    )

    def connect(self) -> EdgeClient:
        """A client of the edge these parameters name (close it, or use it in ``with``)."""
        return EdgeClient.connect(
            microscope=self.microscope,
            url=self.edge_url,
            token_file=self.edge_token_file,
            ca_file=self.edge_ca_file,
        )
