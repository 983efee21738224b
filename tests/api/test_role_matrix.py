"""The role matrix, built from the app's own routes: every route × every role, no key and a wrong
key. A route added without an entry here fails the test, so no route is ever left unguarded by
accident."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from serving.auth import ROLES
from tests.factories.api import KEYS, make_app, running

OPEN = "open"
# Who may call each route: a role, or roles (admin may call every route), or OPEN for no key at
# all. Pages also take the session cookie of POST /sign-in (tests/api/test_pages.py).
NEEDED: dict[tuple[str, str], str | tuple[str, ...]] = {
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("GET", "/health/live"): OPEN,
    ("GET", "/health/ready"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("POST", "/v1/offers"): "renderer",
    ("POST", "/v1/offers/batch"): "renderer",
    ("GET", "/v1/customers/{customer_id}/usage-summary"): "renderer",
    ("POST", "/v1/events"): "renderer",
    ("POST", "/v1/consents"): ("consent", "renderer"),
    ("GET", "/v1/experiments"): "marketing",
    ("POST", "/v1/experiments"): "marketing",
    ("GET", "/v1/experiments/{key}"): "marketing",
    ("GET", "/v1/experiments/{key}/report"): "marketing",
    ("POST", "/v1/experiments/{key}/stop"): "marketing",
    ("GET", "/experiments/{key}"): "marketing",
    ("GET", "/preview/invoices/{invoice_id}"): ("renderer", "marketing"),
    ("GET", "/sign-in"): OPEN,
    ("GET", "/favicon.ico"): OPEN,
    ("POST", "/sign-in"): OPEN,
    ("POST", "/sign-out"): OPEN,
    ("POST", "/v1/admin/reload"): "admin",
}
PATH_VALUES = {
    "{customer_id}": "C0001",
    "{key}": "no-such-experiment",
    "{invoice_id}": "INV-NO-SUCH-INVOICE",
}


def roles_of(needed: str | tuple[str, ...]) -> tuple[str, ...]:
    return (needed,) if isinstance(needed, str) else needed


def _routes(routes: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, through included routers of either FastAPI layout."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
            continue
        for method in sorted(getattr(route, "methods", None) or []):
            if method != "HEAD":
                yield method, route.path


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running(make_app(tmp_path_factory.mktemp("roles"))) as opened:
        yield opened


def test_every_route_of_the_app_is_in_the_matrix(client: Any) -> None:
    assert set(_routes(client.app.routes)) == set(NEEDED)


def _call(client: Any, method: str, path: str, key: str | None) -> int:
    for name, value in PATH_VALUES.items():
        path = path.replace(name, value)
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    # An empty JSON object: enough to pass the key check, whose answer comes before the body's.
    body = {} if method == "POST" else None
    return int(client.request(method, path, json=body, headers=headers).status_code)


@pytest.mark.parametrize(("method", "path"), sorted(NEEDED))
def test_each_route_answers_each_caller_as_the_matrix_says(
    client: Any, method: str, path: str
) -> None:
    needed = NEEDED[(method, path)]
    callers: dict[str, str | None] = {"no key": None, "wrong key": "not-a-key-of-this-api-00"}
    callers.update({role: KEYS[role] for role in ROLES})
    for caller, key in callers.items():
        status = _call(client, method, path, key)
        if needed == OPEN:
            assert status not in {401, 403}, (caller, status)
        elif key is None or caller == "wrong key":
            assert status == 401, (caller, status)
        elif caller == "admin" or caller in roles_of(needed):
            assert status not in {401, 403}, (caller, status)
        else:
            assert status == 403, (caller, status)


def test_the_matrix_covers_every_role(client: Any) -> None:
    assert set(KEYS) == set(ROLES)
    needed = {role for roles in NEEDED.values() if roles != OPEN for role in roles_of(roles)}
    assert needed == set(ROLES)
