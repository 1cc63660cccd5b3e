"""Model registry: names to factories, checked for conformance when registered and loaded."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from scopeflow._errors import ConfigurationError

from ._protocol import SegmentationModel

__all__ = ["available_models", "load_model", "register_model"]

ModelFactory = Callable[..., SegmentationModel]

_factories: dict[str, ModelFactory] = {}
_lock = threading.Lock()


def register_model(name: str, factory: ModelFactory, *, replace: bool = False) -> None:
    """Register ``factory`` (called with keyword options) under ``name``."""
    if not callable(factory):
        raise TypeError(f"model factory for {name!r} must be callable, got {factory!r}")
    with _lock:
        if name in _factories and not replace:
            raise ConfigurationError(
                f"a model named {name!r} is already registered; pass replace=True to override it"
            )
        _factories[name] = factory


def available_models() -> list[str]:
    _ensure_builtins()
    with _lock:
        return sorted(_factories)


def load_model(name: str, **options: Any) -> SegmentationModel:
    """Build the model registered as ``name``, or from ``"package.module:factory"``.

    The import-path form lets worker processes (Ray, Dask) build a user's model without it
    being registered there first. Raises ConfigurationError naming the choices.
    """
    _ensure_builtins()
    with _lock:
        factory = _factories.get(name)
    if factory is None and ":" in name:
        factory = _import_factory(name)
    if factory is None:
        raise ConfigurationError(
            f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}"
        )
    model = factory(**options)
    missing = [attr for attr in ("name", "version", "segment") if not hasattr(model, attr)]
    if missing or not isinstance(model, SegmentationModel):
        raise ConfigurationError(
            f"model {name!r} does not implement SegmentationModel (missing {missing}); see "
            "tasks.inference.SegmentationModel"
        )
    return model


def _import_factory(path: str) -> ModelFactory:
    import importlib

    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot import model factory {path!r}: {exc}; give 'package.module:callable' "
            "importable on every worker"
        ) from exc
    if not callable(factory):
        raise ConfigurationError(f"model factory {path!r} is not callable")
    return factory


def _ensure_builtins() -> None:
    """Import the built-in model modules once; each registers itself."""
    from . import _builtin_models  # noqa: F401
