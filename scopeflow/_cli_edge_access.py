"""`scopeflow edge user ...` and `scopeflow edge tls ...`: users, roles and tokens of an edge,
and a self-signed TLS pair. The edge re-reads its users file when it changes: no restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._cli_fail import fail as _fail
from ._errors import ScopeflowError
from ._settings import load_settings

__all__ = ["register"]

_USERS_FILE_HELP = "The edge's users file (default: the settings, then <data-dir>/users.json)."


def _users_file(users_file: Path | None, data_dir: Path | None) -> Path:
    settings = load_settings().edge
    if users_file is not None:
        return users_file
    if data_dir is not None:
        return data_dir / "users.json"
    return settings.users_file or settings.data_dir / "users.json"


def register(edge_app: typer.Typer) -> None:
    user_app = typer.Typer(
        help="Users of an edge: per-user tokens (hashed at rest) and roles read/control/admin.",
        no_args_is_help=True,
    )
    edge_app.add_typer(user_app, name="user")
    tls_app = typer.Typer(help="TLS certificates for an edge.", no_args_is_help=True)
    edge_app.add_typer(tls_app, name="tls")

    @user_app.command("add")
    def user_add(
        name: Annotated[str, typer.Argument(help="User name (letters, digits, _ and -).")],
        role: Annotated[str, typer.Option(help="read, control or admin.")] = "read",
        users_file: Annotated[Path | None, typer.Option(help=_USERS_FILE_HELP)] = None,
        data_dir: Annotated[Path | None, typer.Option(help="The edge's --data-dir.")] = None,
        token_out: Annotated[
            Path | None, typer.Option(help="Also write the token to this file (mode 0600).")
        ] = None,
    ) -> None:
        """Add a user; prints its token once (only its hash is kept)."""
        from tasks.hardware import UsersFile

        path = _users_file(users_file, data_dir)
        try:
            token = UsersFile(path).add(name, role)  # type: ignore[arg-type]
        except ScopeflowError as exc:
            _fail(exc)
            return
        _hand_out(token, token_out)

    @user_app.command("rotate")
    def user_rotate(
        name: Annotated[str, typer.Argument(help="User name.")],
        users_file: Annotated[Path | None, typer.Option(help=_USERS_FILE_HELP)] = None,
        data_dir: Annotated[Path | None, typer.Option(help="The edge's --data-dir.")] = None,
        token_out: Annotated[
            Path | None, typer.Option(help="Also write the token to this file (mode 0600).")
        ] = None,
    ) -> None:
        """A new token for a user (same role); the old one stops working at once."""
        from tasks.hardware import UsersFile

        try:
            token = UsersFile(_users_file(users_file, data_dir)).rotate(name)
        except ScopeflowError as exc:
            _fail(exc)
            return
        _hand_out(token, token_out)

    @user_app.command("remove")
    def user_remove(
        name: Annotated[str, typer.Argument(help="User name.")],
        users_file: Annotated[Path | None, typer.Option(help=_USERS_FILE_HELP)] = None,
        data_dir: Annotated[Path | None, typer.Option(help="The edge's --data-dir.")] = None,
    ) -> None:
        """Remove a user; its token stops working at once."""
        from tasks.hardware import UsersFile

        try:
            UsersFile(_users_file(users_file, data_dir)).remove(name)
        except ScopeflowError as exc:
            _fail(exc)

    @user_app.command("list")
    def user_list(
        users_file: Annotated[Path | None, typer.Option(help=_USERS_FILE_HELP)] = None,
        data_dir: Annotated[Path | None, typer.Option(help="The edge's --data-dir.")] = None,
    ) -> None:
        """Users and their roles as JSON (never tokens)."""
        from tasks.hardware import UsersFile

        try:
            users = UsersFile(_users_file(users_file, data_dir)).load()
        except ScopeflowError as exc:
            _fail(exc)
            return
        typer.echo(json.dumps({name: record.role for name, record in users.items()}))

    @tls_app.command("self-signed")
    def tls_self_signed(
        out: Annotated[Path, typer.Option(help="Folder for ca.pem, edge.pem and edge.key.")],
        host: Annotated[
            list[str] | None,
            typer.Option(help="Name or address clients use (repeat; default: loopback)."),
        ] = None,
        days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    ) -> None:
        """A CA and an edge certificate signed by it: serve with --tls-cert edge.pem --tls-key
        edge.key, give clients ca.pem (ca_file / SCOPEFLOW_EDGE_CA_FILE)."""
        from tasks.hardware import make_self_signed

        pair = make_self_signed(out, host or None, days=days)
        typer.echo(
            json.dumps({"ca": str(pair.ca_cert), "cert": str(pair.cert), "key": str(pair.key)})
        )


def _hand_out(token: str, token_out: Path | None) -> None:
    if token_out is not None:
        import os

        token_out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    typer.echo(token)
