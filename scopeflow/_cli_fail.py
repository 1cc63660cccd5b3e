"""How every command fails: one red line on stderr naming the problem (and its fix), exit 2."""

from __future__ import annotations

from typing import NoReturn

import typer

from ._errors import ScopeflowError

__all__ = ["fail"]


def fail(problem: ScopeflowError | str) -> NoReturn:
    typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
