"""Which edge command the current thread is carrying out (the file-drop driver names it in each
file it writes for the macro).

The agent opens a scope around a direct command and around each queued event it hands to the
acquisition runner; drivers read it with `current_command`. Thread-local: a direct command on an
HTTP thread and an acquisition on the runner's thread each see their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["CommandScope", "command_scope", "current_command"]

_local = threading.local()


@dataclass(frozen=True, slots=True)
class CommandScope:
    command_id: str
    event: int | None = None  # the event's number in its command; None: a direct command
    tag: str | None = None


@contextmanager
def command_scope(
    command_id: str, event: int | None = None, tag: str | None = None
) -> Iterator[CommandScope]:
    previous = getattr(_local, "scope", None)
    scope = CommandScope(command_id, event, tag)
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = previous


def current_command() -> CommandScope | None:
    return getattr(_local, "scope", None)
