"""Headless Chromium (the system's, driven by Playwright) for checks of the Prefect UI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["browser_page"]

_HOW = (
    "install Chromium (`apt-get install chromium`) and Playwright (`pip install playwright`, "
    "part of the dev extra); SCOPEFLOW_CHROMIUM=PATH picks another binary"
)


def _chromium() -> str | None:
    if path := os.environ.get("SCOPEFLOW_CHROMIUM"):
        return path
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@contextmanager
def browser_page() -> Iterator[Any]:
    """A fresh page in headless Chromium. Skips (or fails where CI requires a browser:
    SCOPEFLOW_REQUIRE_BROWSER=1) when Chromium or Playwright is missing."""
    binary = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if binary is None or sync_playwright is None:
        missing = "Chromium" if binary is None else "Playwright"
        if os.environ.get("SCOPEFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing} is required here (SCOPEFLOW_REQUIRE_BROWSER=1): {_HOW}")
        pytest.skip(f"{missing} not found: {_HOW}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()
