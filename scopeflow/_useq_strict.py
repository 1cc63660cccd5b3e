"""Unknown fields anywhere in a useq-schema request: useq's models ignore what they do not know
(``extra="ignore"``), so a misspelt ``stpe`` inside a ``z_plan`` or ``exposre`` in a channel
would silently acquire something else than asked. `unknown_useq_fields` walks the input next
to the model useq made of it and names every key no field (or alias, or input synonym useq
accepts) reads, with its path and the closest known name. Where a field takes one of several
models (a grid plan, a z plan), an unknown key can make useq read the input as another model
than meant (``{"rows": 2, "colums": 3}`` is a `RelativePosition` to useq, not a grid): the
names are then checked against the model that knows the most of the keys, and the refusal
says what useq would have read.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import useq
from pydantic import BaseModel

__all__ = ["UnknownField", "unknown_useq_fields"]

# input keys useq's own validators read and rename (a position's row -> grid_row)
_SYNONYMS: tuple[tuple[tuple[type, ...], frozenset[str]], ...] = (
    ((useq.AbsolutePosition, useq.RelativePosition), frozenset({"row", "col"})),
)


@dataclass(frozen=True, slots=True)
class UnknownField:
    """A key of the input that no field of its model reads."""

    path: tuple[str | int, ...]  # where the key is, e.g. ("sequence", "z_plan")
    key: str
    known: tuple[str, ...]  # the fields that place has
    meant: str | None = None  # the model the keys fit best, when useq read another
    read_as: str | None = None  # the model useq read the input as, then

    @property
    def hint(self) -> str | None:
        """The closest known name (None when none is close)."""
        close = difflib.get_close_matches(self.key, self.known, n=1, cutoff=0.7)
        return close[0] if close else None

    @property
    def where(self) -> str:
        return ".".join(str(p) for p in self.path) or "the top level"

    def message(self) -> str:
        """What is wrong and the fix, in one sentence."""
        fix = (
            f"did you mean {self.hint!r}?"
            if self.hint
            else f"known fields there: {', '.join(self.known)}"
        )
        if self.meant is not None:
            return (
                f"unknown field {self.key!r} in {self.where} (a {self.meant}): {fix} "
                f"(useq-schema ignores unknown fields: it would have read this as a "
                f"{self.read_as})"
            )
        return (
            f"unknown field {self.key!r} in {self.where}: {fix} (useq-schema would ignore it "
            "silently)"
        )


def unknown_useq_fields(
    data: Any, model: Any, path: tuple[str | int, ...] = ()
) -> list[UnknownField]:
    """Every key of ``data`` (the input) that ``model`` (what it validated into) has no field
    for, at any depth, in the input's order."""
    found: list[UnknownField] = []
    _walk(data, model, path, found)
    return found


def _walk(
    data: Any,
    model: Any,
    path: tuple[str | int, ...],
    found: list[UnknownField],
    others: tuple[type[BaseModel], ...] = (),
) -> None:
    """``others``: the models the field also takes (a union), for a better reading of keys."""
    if isinstance(model, BaseModel):
        if isinstance(model, useq.MultiPhaseTimePlan) and _is_list(data):
            _walk(data, model.phases, path, found)  # a list of phases is the plan
            return
        if not isinstance(data, Mapping):
            return  # a short form useq expands (a channel's name, a position as a list)
        kind = type(model)
        unknown = _unknown_keys(data, kind, model)
        meant = _best_reading(data, kind, others, len(unknown)) if unknown else None
        if meant is not None:
            known = tuple(sorted(meant.model_fields))
            for key in _unknown_keys(data, meant, None):
                found.append(UnknownField(path, key, known, meant.__name__, kind.__name__))
        else:
            known = tuple(sorted(kind.model_fields))
            found.extend(UnknownField(path, key, known) for key in unknown)
        names = _names(kind)
        fields = kind.model_fields
        for key, value in data.items():
            name = names.get(str(key))
            if name is not None:
                _walk(
                    value,
                    getattr(model, name, None),
                    (*path, str(key)),
                    found,
                    _models_in(fields[name].annotation),
                )
    elif isinstance(model, Sequence) and not isinstance(model, str) and _is_list(data):
        for i, (item, sub) in enumerate(zip(data, model, strict=False)):
            _walk(item, sub, (*path, i), found, others)


def _names(kind: type[BaseModel]) -> dict[str, str]:
    fields = kind.model_fields
    return {name: name for name in fields} | {
        f.alias: name for name, f in fields.items() if f.alias
    }


def _unknown_keys(data: Mapping[Any, Any], kind: type[BaseModel], model: Any) -> list[str]:
    names = _names(kind)
    synonyms = frozenset().union(*(keys for kinds, keys in _SYNONYMS if issubclass(kind, kinds)))
    return [str(k) for k in data if str(k) not in names and str(k) not in synonyms]


def _best_reading(
    data: Mapping[Any, Any],
    read: type[BaseModel],
    others: tuple[type[BaseModel], ...],
    unknown: int,
) -> type[BaseModel] | None:
    """Another model of the union that knows more of the keys than the one useq read."""
    best, fewest = None, unknown
    for other in others:
        if other is read:
            continue
        left = len(_unknown_keys(data, other, None))
        if left < fewest:
            best, fewest = other, left
    return best


def _models_in(annotation: Any) -> tuple[type[BaseModel], ...]:
    """The pydantic models an annotation names (through unions, Annotated, tuples)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (annotation,)
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for kind in _models_in(arg):
            if kind not in found:
                found.append(kind)
    return tuple(found)


def _is_list(data: Any) -> bool:
    return isinstance(data, list | tuple)
