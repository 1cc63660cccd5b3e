"""Users, roles and tokens of an edge: who a bearer token belongs to.

A token is ``<user>.<secret>``; the users file keeps only its scrypt hash (with salt and
parameters), never the token. `UserStore` reloads the file when it changes (token rotation
without a restart) and caches a verified token's SHA-256 so only the first request of a token
pays scrypt's ~50 ms; every comparison is constant-time. The edge's single ``--token-file``
token keeps working as the ``control`` user `LEGACY_USER`.

The users file (JSON, written atomically by `UsersFile.save`, mode 0600)::

    {"version": 1, "users": {"alice": {"role": "control", "token_hash": "scrypt$...",
                                       "created": "2026-12-04T22:00:00+00:00"}}}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scopeflow import ROLES, ConfigurationError, Role

__all__ = [
    "LEGACY_USER",
    "Principal",
    "UserRecord",
    "UserStore",
    "UsersFile",
    "hash_token",
    "new_token",
    "verify_token",
]

log = logging.getLogger(__name__)

LEGACY_USER = "edge-token"
"""The user the edge's ``--token-file`` token authenticates as (role ``control``)."""

_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_SCRYPT_MAXMEM = 64 * 2**20
_REFUSED_MAX = 4096


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its user name and role."""

    user: str
    role: Role


class UserRecord(BaseModel):
    """One user of the users file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    token_hash: str = Field(..., pattern=r"^scrypt\$")
    created: datetime


class _UsersDocument(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    users: dict[str, UserRecord] = Field(default_factory=dict)


def new_token(user: str) -> str:
    """A fresh token for ``user``: ``<user>.<43 random url-safe characters>`` (256 bits)."""
    return f"{user}.{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``token``: what the users file stores."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, maxmem=_SCRYPT_MAXMEM, **_SCRYPT)
    b64 = base64.b64encode
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + f"{b64(salt).decode()}${b64(digest).decode()}"


def verify_token(token: str, stored: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (constant-time comparison)."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            token.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


class UsersFile:
    """The users file on disk: read, change and write it (the CLI's side)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, UserRecord]:
        """The users in the file ({} when it does not exist); `ConfigurationError` naming the
        problem when it is not a valid users file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(f"cannot read the users file {self.path}: {exc}") from exc
        try:
            document = _UsersDocument.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigurationError(
                f"the users file {self.path} is not valid ({exc.errors()[0]['msg']} at "
                f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}); fix it or recreate it "
                "with `scopeflow edge user add NAME --role control`"
            ) from exc
        for name in document.users:
            _check_name(name)
        return dict(document.users)

    def save(self, users: dict[str, UserRecord]) -> None:
        """Write ``users`` atomically (a reader sees the old or the new file), mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = _UsersDocument(users=users).model_dump(mode="json")
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def add(self, name: str, role: Role, *, replace: bool = False) -> str:
        """Add user ``name`` (or give it a new token with ``replace``); returns the token,
        which is stored nowhere: print it once."""
        _check_name(name)
        if role not in ROLES:
            raise ConfigurationError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        users = self.load()
        if name in users and not replace:
            raise ConfigurationError(
                f"user {name!r} already exists in {self.path}; rotate its token with "
                f"`scopeflow edge user rotate {name}` or remove it first"
            )
        token = new_token(name)
        users[name] = UserRecord(role=role, token_hash=hash_token(token), created=datetime.now(UTC))
        self.save(users)
        return token

    def rotate(self, name: str) -> str:
        """A new token for ``name`` (same role); the old one stops working when the edge
        reloads the file (at its next request)."""
        users = self.load()
        if name not in users:
            raise ConfigurationError(_unknown(name, users, self.path))
        return self.add(name, users[name].role, replace=True)

    def remove(self, name: str) -> None:
        users = self.load()
        if name not in users:
            raise ConfigurationError(_unknown(name, users, self.path))
        del users[name]
        self.save(users)


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name == LEGACY_USER:
        raise ConfigurationError(
            f"user name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-' "
            f"(and not {LEGACY_USER!r}, the --token-file user)"
        )


def _unknown(name: str, users: dict[str, Any], path: Path) -> str:
    known = ", ".join(sorted(users)) or "none"
    return f"no user {name!r} in {path} (users: {known}); add it with `scopeflow edge user add`"


class _Watched:
    """A file re-read when its (mtime, size, inode) changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.signature: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        try:
            st = self.path.stat()
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            signature = None
        if signature == self.signature:
            return False
        self.signature = signature
        return True


class UserStore:
    """Authenticates tokens against the users file and the legacy token file, both reloaded
    when they change. Thread-safe."""

    def __init__(
        self,
        users_file: Path | None,
        token_file: Path | None = None,
        *,
        token: str | None = None,
    ) -> None:
        """``users_file`` (None: no users but the legacy one); the legacy token from
        ``token_file`` (re-read when it changes) or given as ``token``."""
        self._users_file = UsersFile(users_file) if users_file else None
        self._users_watch = _Watched(Path(users_file)) if users_file else None
        self._token_watch = _Watched(Path(token_file)) if token_file else None
        self._lock = threading.Lock()
        self._users: dict[str, UserRecord] = {}
        self._legacy: bytes | None = token.encode() if token else None
        self._verified: dict[str, bytes] = {}  # user -> SHA-256 of its verified token
        self._refused: set[bytes] = set()  # SHA-256 of tokens that failed (a retry costs no scrypt)
        self.last_error: str | None = None
        self.reload()

    @property
    def users(self) -> dict[str, Role]:
        self._refresh()
        return {name: record.role for name, record in self._users.items()}

    def reload(self) -> int:
        """Re-read both files now; raises `ConfigurationError` (keeping the users it had) when
        the users file is invalid. Returns the number of users (the legacy one included)."""
        with self._lock:
            for watch in (self._users_watch, self._token_watch):
                if watch is not None:
                    watch.changed()
            self._load()
            if self.last_error:
                raise ConfigurationError(self.last_error)
            return len(self._users) + (self._legacy is not None)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal ``token`` belongs to, or None (missing, unknown or wrong)."""
        if not token:
            return None
        self._refresh()
        encoded = token.encode()
        legacy = self._legacy
        if legacy is not None and hmac.compare_digest(encoded, legacy):
            return Principal(LEGACY_USER, "control")
        name, dot, _ = token.partition(".")
        record = self._users.get(name) if dot else None
        if record is None:
            return None
        fingerprint = hashlib.sha256(encoded).digest()
        known = self._verified.get(name)
        if known is not None:
            return Principal(name, record.role) if hmac.compare_digest(fingerprint, known) else None
        if fingerprint in self._refused:
            return None
        if not verify_token(token, record.token_hash):
            with self._lock:
                if len(self._refused) >= _REFUSED_MAX:
                    self._refused.clear()
                self._refused.add(fingerprint)
            return None
        with self._lock:
            if self._users.get(name) is record:  # not rotated meanwhile
                self._verified[name] = fingerprint
        return Principal(name, record.role)

    def _refresh(self) -> None:
        changed = [w.changed() for w in (self._users_watch, self._token_watch) if w is not None]
        if any(changed):
            with self._lock:
                self._load()

    def _load(self) -> None:
        try:
            users = self._users_file.load() if self._users_file else {}
        except ConfigurationError as exc:
            self.last_error = str(exc)
            log.error("%s; the edge keeps the %d users it had", exc, len(self._users))
        else:
            self.last_error = None
            self._verified = {
                n: h for n, h in self._verified.items() if users.get(n) == self._users.get(n)
            }
            self._refused = set()  # a rotated token may be one that failed before
            self._users = users
        self._legacy = self._read_legacy()

    def _read_legacy(self) -> bytes | None:
        if self._token_watch is None:
            return None
        try:
            token = self._token_watch.path.read_text().strip()
        except OSError:
            return self._legacy
        return token.encode() if token else None
