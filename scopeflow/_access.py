"""Who may do what on an edge: roles, the microscope lease and their wire models.

Shared by the edge (which enforces them) and its clients (which read its answers).

- A **role** is what a user's token allows: ``read`` observes (state, info, frames, streams),
  ``control`` also commands the microscope (events, sequences, direct commands, stop, simulator
  faults, the command channel, the lease), ``admin`` also manages users and breaks leases.
- A **lease** gives one holder (a flow run, a person) the microscope for ``ttl_s`` seconds,
  renewed by its heartbeat; while it runs, control requests of anyone else are refused (HTTP 423)
  with who holds it and until when. Observers are never refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LEASE_HEADER",
    "ROLES",
    "LeaseInfo",
    "LeaseRequest",
    "Role",
    "WhoAmI",
    "role_allows",
]

Role = Literal["read", "control", "admin"]
ROLES: tuple[Role, ...] = ("read", "control", "admin")
LEASE_HEADER = "X-Scopeflow-Lease"
"""HTTP header naming the lease holder a control request speaks for."""

_HOLDER_PATTERN = r"^[A-Za-z0-9._:@\-]{1,128}$"


def role_allows(role: Role, needed: Role) -> bool:
    """Whether ``role`` may do what needs ``needed`` (admin > control > read)."""
    return ROLES.index(role) >= ROLES.index(needed)


class LeaseRequest(BaseModel):
    """``POST /v1/lease``: take (or renew) the microscope for ``holder``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holder: str = Field(
        ...,
        pattern=_HOLDER_PATTERN,
        description="Who controls the microscope: a flow run id or a person (letters, digits, "
        "._:@-)",
    )
    ttl_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="Seconds the lease lasts unless renewed (the client's heartbeat renews it)",
    )


class LeaseInfo(BaseModel):
    """A granted lease: its holder, the user whose token took it and until when it runs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    holder: str
    user: str
    acquired_at: datetime
    expires_at: datetime
    ttl_s: float


class WhoAmI(BaseModel):
    """``GET /v1/whoami``: the user a token belongs to, its role and the lease in force."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    user: str
    role: Role
    holder: str | None = None
    lease: LeaseInfo | None = None
