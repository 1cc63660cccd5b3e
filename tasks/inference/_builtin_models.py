"""Registers the models that ship with scopeflow (imported lazily by the registry)."""

from __future__ import annotations
