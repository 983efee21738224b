"""Fixtures of every area: service URLs that skip with a reason (fail under
OFFERS_REQUIRE_SERVICES=1), and the simulated world the integration tests share.

Tests sit by area (api, core, decision, features, pipelines, training); the ones that need real
Feast, MLflow, SQLite, Redis or PostgreSQL are marked ``integration``, so ``-m "not integration"``
runs the others alone.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa

from benchmarks.runner import keep_prometheus_in_process
from core.settings import Settings
from serving.decision_log import DecisionLog

pytest_plugins = ["tests.simulated_world"]

# The servers and commands the tests start keep their metrics in memory, as when started from a
# shell: the first Feast read of a test would otherwise switch every process started after it to
# prometheus_client's multiprocess mode.
keep_prometheus_in_process()

REDIS_URL = os.environ.get("OFFERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "OFFERS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 1.0):
            return True
    except OSError:
        return False


def _require(url: str, what: str) -> str:
    if _reachable(url):
        return url
    message = f"{what} is not reachable at {url}"
    if os.environ.get("OFFERS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}, and OFFERS_REQUIRE_SERVICES=1 says it must be")
    pytest.skip(f"{message}; set OFFERS_TEST_{what.upper()}_URL or start it")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis URL for tests (database 15), or a skip with the reason."""
    return _require(REDIS_URL, "redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL for tests, or a skip with the reason."""
    return _require(POSTGRES_URL, "postgres")


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own in the test database, dropped afterwards."""
    from serving.decision_log.database import create_log_engine

    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_log_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionLog]:
    """A decision log on SQLite, and on PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        opened = DecisionLog(f"sqlite:///{tmp_path / 'offers.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        opened = DecisionLog(url, schema=request.getfixturevalue("pg_schema"))
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def feast_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """A real store of the few factory customers and its project, on SQLite and on Redis; on
    Redis in a project of its own (keys carry the project), deleted afterwards."""
    from features.store import PROJECT
    from tests.factories.api import build_feast_store, feast_settings

    if request.param == "sqlite":
        settings = feast_settings(tmp_path)
        build_feast_store(settings)
        yield settings, PROJECT
        return
    redis_url = request.getfixturevalue("redis_url")
    project = f"test_{uuid.uuid4().hex[:8]}"
    settings = feast_settings(tmp_path, online_store=redis_url)
    build_feast_store(settings, project)
    try:
        yield settings, project
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=b"*" + project.encode()):
            client.delete(key)
        client.close()
