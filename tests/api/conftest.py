"""The API's fixtures: an app on fakes (a few customers, tiny models) and a client of it.

Each test gets an app of its own, so what one test logs or creates no other test sees. A test
that needs another app asks for the pieces: ``features`` to make reads fail, ``registry`` to
swap champions, or overrides ``app`` in its module (an extra route, other settings).

The pages' browser tests share ``chromium_path`` (Debian's Chromium) and ``browser`` (Playwright
driving it): without them a test skips with the reason, unless ``OFFERS_REQUIRE_SERVICES=1`` (as
CI sets: ``.ci/run`` installs both), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.factories.api import FakeFeatures, FakeRegistry, make_app, running


@pytest.fixture
def features() -> FakeFeatures:
    """The online store the app reads; set ``fail`` to make its reads fail."""
    return FakeFeatures()


@pytest.fixture
def registry() -> FakeRegistry:
    """The model registry the app loads from; change ``champions`` and reload."""
    return FakeRegistry()


@pytest.fixture
def app(tmp_path: Path, features: FakeFeatures, registry: FakeRegistry) -> FastAPI:
    """The app with its decision log in ``tmp_path``, reading ``features`` and ``registry``."""
    return make_app(tmp_path, features=features, registry=registry)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client of ``app`` with its lifespan run: stores open, models loaded."""
    with running(app) as opened:
        yield opened


def missing(what: str) -> None:
    """Skip for something a test needs that is not installed; fail when CI says it must be."""
    if os.environ.get("OFFERS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what}, and OFFERS_REQUIRE_SERVICES=1 says it must be there")
    pytest.skip(f"{what}; .ci/run installs it")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium (``chromium``, or ``chromium-browser`` elsewhere)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    """That Chromium, headless, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            launched.close()
