"""Model registry: names to factories, checked for conformance when loaded.

Two kinds share one mechanism: segmentation models (``load_model``) and restoration models
(``load_restoration_model``); each kind has its own names, so "unet" and "care" never clash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

from scopeflow import ConfigurationError

from ._protocol import RestorationModel, SegmentationModel

__all__ = [
    "BIOIMAGEIO_PREFIX",
    "available_models",
    "available_restoration_models",
    "load_model",
    "load_restoration_model",
    "register_model",
]

ModelFactory = Callable[..., Any]
Kind = Literal["segmentation", "restoration"]

BIOIMAGEIO_PREFIX = "bioimageio:"  # "bioimageio:/path/to/package.zip" (a local file only)

_factories: dict[str, ModelFactory] = {}
_restoration_factories: dict[str, ModelFactory] = {}
_lock = threading.Lock()


def _table(kind: Kind) -> dict[str, ModelFactory]:
    if kind == "segmentation":
        return _factories
    if kind == "restoration":
        return _restoration_factories
    raise ConfigurationError(f"unknown model kind {kind!r}; use 'segmentation' or 'restoration'")


def register_model(
    name: str, factory: ModelFactory, *, replace: bool = False, kind: Kind = "segmentation"
) -> None:
    """Register ``factory`` (called with keyword options) under ``name`` for ``kind``."""
    if not callable(factory):
        raise TypeError(f"model factory for {name!r} must be callable, got {factory!r}")
    table = _table(kind)
    with _lock:
        if name in table and not replace:
            raise ConfigurationError(
                f"a {kind} model named {name!r} is already registered; pass replace=True to "
                "override it"
            )
        table[name] = factory


def available_models() -> list[str]:
    """Names of the registered segmentation models."""
    _ensure_builtins()
    with _lock:
        return sorted(_factories)


def available_restoration_models() -> list[str]:
    """Names of the registered restoration models."""
    _ensure_builtins()
    with _lock:
        return sorted(_restoration_factories)


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


def load_restoration_model(name: str, **options: Any) -> RestorationModel:
    """Build the restoration model registered as ``name``.

    Also accepted: ``"package.module:factory"`` (as for ``load_model``) and
    ``"bioimageio:/path/to/package.zip"`` (a BioImage Model Zoo package on local disk; nothing
    is fetched from a hub). Raises ConfigurationError naming the choices.
    """
    _ensure_builtins()
    if name.startswith(BIOIMAGEIO_PREFIX):
        from ._bioimageio import load_bioimageio_package

        model: Any = load_bioimageio_package(name[len(BIOIMAGEIO_PREFIX) :], **options)
    else:
        with _lock:
            factory = _restoration_factories.get(name)
        if factory is None and ":" in name:
            factory = _import_factory(name)
        if factory is None:
            raise ConfigurationError(
                f"unknown restoration model {name!r}; available: "
                f"{', '.join(available_restoration_models()) or 'none'}, or "
                f"'{BIOIMAGEIO_PREFIX}/path/to/package.zip'"
            )
        model = factory(**options)
    missing = [attr for attr in ("name", "version", "restore") if not hasattr(model, attr)]
    if missing or not isinstance(model, RestorationModel):
        raise ConfigurationError(
            f"model {name!r} does not implement RestorationModel (missing {missing}); see "
            "tasks.inference.RestorationModel"
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
