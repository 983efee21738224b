"""The API's fixtures: an app on fakes (a few customers, tiny models) and a client of it.

Each test gets an app of its own, so what one test logs or creates no other test sees. A test
that needs another app asks for the pieces: ``features`` to make reads fail, ``registry`` to
swap champions, or overrides ``app`` in its module (an extra route, other settings).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
