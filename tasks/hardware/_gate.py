"""Access control of the edge, the same on every path (HTTP, WebSocket, frame stream, command
channel): who the token belongs to (`UserStore`), whether the role allows the request, whether
the microscope's lease lets it through (`LeaseManager`), and the audit log (`AuditLog`).

What a request needs follows from how it is made, so a new route is covered without a list
to update: ``GET``/``HEAD`` observe (``read``), every other method controls (``control``),
``/v1/admin/...`` needs ``admin``; only `OPEN_PATHS` need no token. The lease's own routes
(`LEASE_PATHS`) are control requests that the lease itself does not block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopeflow import ChannelAnswer, CommandAck, CommandRequest, Refusal, Role, role_allows

from ._audit import AuditLog, command_fields
from ._auth import Principal, UserStore
from ._lease import LeaseManager, LeaseRefused
from ._refusals import answer_command

__all__ = [
    "ADMIN_PREFIX",
    "LEASE_PATHS",
    "OPEN_PATHS",
    "AccessRefused",
    "EdgeGate",
    "needed_role",
]

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
ADMIN_PREFIX = "/v1/admin/"
LEASE_PATHS = frozenset({"/v1/lease"})
_READ_METHODS = frozenset({"GET", "HEAD"})


def needed_role(method: str, path: str) -> Role | None:
    """The role a request needs (None: open to anyone)."""
    if path in OPEN_PATHS:
        return None
    if path.startswith(ADMIN_PREFIX):
        return "admin"
    return "read" if method.upper() in _READ_METHODS else "control"


class AccessRefused(Exception):
    """A request refused by access control: its HTTP status and refusal body."""

    def __init__(self, status: int, refusal: Refusal, principal: Principal | None = None) -> None:
        super().__init__(refusal.message)
        self.status = status
        self.refusal = refusal
        self.principal = principal


@dataclass
class EdgeGate:
    """Authentication, roles, the lease and the audit log of one edge."""

    users: UserStore
    lease: LeaseManager = field(default_factory=LeaseManager)
    audit_log: AuditLog | None = None

    @classmethod
    def single_token(cls, token: str) -> EdgeGate:
        """Only the one shared token (a ``control`` user), no audit log: what an edge was
        before users and roles."""
        return cls(UserStore(None, token=token))

    @classmethod
    def for_edge(
        cls,
        users_file: Path,
        token_file: Path,
        audit_file: Path,
        *,
        require_lease: bool = False,
        lease_file: Path | None = None,
    ) -> EdgeGate:
        """The gate of an edge process; ``lease_file`` keeps the lease across restarts."""
        return cls(
            UserStore(users_file, token_file),
            LeaseManager(lease_file, require_lease=require_lease),
            AuditLog(audit_file),
        )

    def admit(
        self, token: str | None, needed: Role | None, *, holder: str | None, lease_free: bool
    ) -> Principal | None:
        """The caller of a request that needs ``needed``, or `AccessRefused` (401 no or wrong
        token, 403 role too low, 423 the lease is another's; ``lease_free``: the request
        manages the lease itself)."""
        if needed is None:
            return None
        principal = self.users.authenticate(token)
        if principal is None:
            raise AccessRefused(
                401,
                Refusal(
                    error="unauthorized",
                    message="missing or wrong token: send 'Authorization: Bearer <token>' with "
                    "your token (`scopeflow edge user add`) or the one in the edge's "
                    "--token-file",
                ),
            )
        if not role_allows(principal.role, needed):
            raise AccessRefused(
                403,
                Refusal(
                    error="forbidden",
                    message=f"user {principal.user!r} has role {principal.role!r}, this needs "
                    f"{needed!r}: ask an admin for a {needed} token (`scopeflow edge user add "
                    f"NAME --role {needed}`)",
                ),
                principal,
            )
        if needed == "control" and not lease_free:
            try:
                self.lease.check(principal.user, holder)
            except LeaseRefused as exc:
                refusal = Refusal(error="leased", message=str(exc), lease=exc.lease)
                raise AccessRefused(423, refusal, principal) from exc
        return principal

    def channel_answerer(
        self, run: Callable[[CommandRequest], CommandAck], token: str, holder: str | None
    ) -> Callable[[bytes], ChannelAnswer]:
        """How a command channel opened with ``token`` (for ``holder``) answers a line: the
        token, its role and the lease are checked again for every command (a token revoked
        or a lease taken meanwhile stops it), and every command is audited."""

        def answer(line: bytes) -> ChannelAnswer:
            fields = command_fields(line[:4096])
            try:
                principal = self.admit(token, "control", holder=holder, lease_free=False)
            except AccessRefused as refused:
                self.audit(
                    refused.principal, via="channel", holder=holder, status=refused.status,
                    **fields,
                )  # fmt: skip
                return ChannelAnswer(ok=False, status=refused.status, detail=refused.refusal)
            result = answer_command(run, line)
            status = 200 if result.ok else result.status
            self.audit(principal, via="channel", holder=holder, status=status, **fields)
            return result

        return answer

    def audit(self, principal: Principal | None, **fields: Any) -> None:
        if self.audit_log is None:
            return
        self.audit_log.record(
            user=principal.user if principal else None,
            role=principal.role if principal else None,
            **fields,
        )

    def close(self) -> None:
        if self.audit_log is not None:
            self.audit_log.close()
