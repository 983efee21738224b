"""Property-based checks of the whole API against its own OpenAPI schema (schemathesis).

Every generated request, valid or not, must be answered without a 5xx, with a documented status,
content type and body; invalid ones must be refused. Every customer id is known here, so valid
offers requests reach the engine and a real decision (tiny LightGBM models) is checked against the
response schema. ``positive_data_acceptance`` is left out: a request the schema allows may still
be refused for what is stored (an unknown decision or experiment, weights that do not sum to 1).
Every request is sent with a valid credential, so an invalid case whose headers were the invalid
part (a missing or malformed ``Authorization``) is sent with that part made valid again: it is
not held to being refused, and every other check still applies to it.

A quick run (20 examples per operation and mode, SQLite decision log) runs with every test; the
full run (200 examples per operation and mode, on a SQLite and on a PostgreSQL decision log, about
five minutes) carries the ``fuzz`` marker: ``make test`` and CI run it, ``-m "not fuzz"`` leaves
it out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from tests.factories.api import FakeFeatures, auth, customers, make_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK_EXAMPLES = 20
FULL_EXAMPLES = 200
# Every documented operation and the role that owns it (admin may call all of them).
OPERATIONS: list[tuple[str, str, str]] = [
    ("POST", "/v1/offers", "renderer"),
    ("POST", "/v1/offers/batch", "renderer"),
    ("GET", "/v1/customers/{customer_id}/usage-summary", "renderer"),
    ("POST", "/v1/events", "renderer"),
    ("POST", "/v1/consents", "consent"),
    ("GET", "/v1/experiments", "marketing"),
    ("POST", "/v1/experiments", "marketing"),
    ("GET", "/v1/experiments/{key}", "marketing"),
    ("POST", "/v1/experiments/{key}/stop", "marketing"),
    ("GET", "/v1/experiments/{key}/report", "marketing"),
    ("GET", "/experiments/{key}", "marketing"),
    ("GET", "/preview/invoices/{invoice_id}", "renderer"),
    ("GET", "/sign-in", "admin"),
    ("POST", "/sign-in", "admin"),
    ("POST", "/sign-out", "admin"),
    ("POST", "/v1/admin/reload", "admin"),
    ("GET", "/health/live", "admin"),
    ("GET", "/health/ready", "admin"),
    ("GET", "/metrics", "admin"),
]


class EveryoneKnown(FakeFeatures):
    """Any customer id exists: its features are one of the factory customers, chosen by hash."""

    def _row(self, customer_id: str, part: int) -> dict[str, Any] | None:
        templates = list(self.rows.values())
        pick = hashlib.sha256(customer_id.encode()).digest()[0] % len(templates)
        return dict(templates[pick][part])


def _schema_of(folder: Path, **settings: Any) -> Any:
    app = make_app(folder, features=EveryoneKnown(customers()), **settings)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The API over a SQLite decision log."""
    return _schema_of(tmp_path_factory.mktemp("schemathesis"))


@pytest.fixture(scope="module")
def postgres_api(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Any]:
    """The API over a PostgreSQL decision log, in a schema of its own, dropped afterwards."""
    from serving.decision_log.database import create_log_engine

    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_log_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    try:
        yield _schema_of(tmp_path_factory.mktemp("schemathesis-pg"), database_url=url)
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def api_schema(sqlite_api: Any) -> Any:
    return sqlite_api


def test_every_operation_is_checked(api_schema: Any) -> None:
    documented = {
        (operation.method.upper(), operation.path)
        for operation in (result.ok() for result in api_schema.get_all_operations())
    }
    assert documented == {(method, path) for method, path, _ in OPERATIONS}


# Operations without parameters have no invalid form to generate.
OPERATION_MODES = [
    (method, path, role, mode)
    for method, path, role in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE
    or not path.startswith(("/health", "/metrics", "/v1/admin", "/sign-out"))
    if not (mode is GenerationMode.NEGATIVE and (method, path) == ("GET", "/v1/experiments"))
]
FUZZ = pytest.mark.fuzz
RUNS = [
    ("sqlite", QUICK_EXAMPLES, ()),
    ("sqlite", FULL_EXAMPLES, (FUZZ,)),
    ("postgres", FULL_EXAMPLES, (FUZZ, pytest.mark.postgres)),
]
CASES = [
    pytest.param(
        log,
        examples,
        method,
        path,
        role,
        mode,
        id=f"{log} {examples} {method} {path} {mode.value}",
        marks=marks,
    )
    for log, examples, marks in RUNS
    for method, path, role, mode in OPERATION_MODES
]


@pytest.mark.parametrize(("log", "examples", "method", "path", "role", "mode"), CASES)
def test_each_operation_keeps_its_schema(
    request: pytest.FixtureRequest,
    log: str,
    examples: int,
    method: str,
    path: str,
    role: str,
    mode: GenerationMode,
) -> None:
    operation = request.getfixturevalue(f"{log}_api")[path][method]
    headers = auth(role)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        excluded = [positive_data_acceptance]
        header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
        if header is not None and header.mode is GenerationMode.NEGATIVE:
            excluded.append(negative_data_rejection)
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()
