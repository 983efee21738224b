"""Who may call what: every route against every role, a wrong key and no key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.settings import API_ROLES
from serving.auth import ROLES, ApiKeys, may_call
from tests.factories.api import auth, make_app, offers_body, running

EVENT = {
    "event_id": "EV-1",
    "decision_id": "D-unknown",
    "offer_id": "PLAN_30GB",
    "type": "click",
    "occurred_at": "2026-12-01T10:00:00Z",
}
EXPERIMENT = {
    "key": "exp-auth",
    "variants": [{"name": "all", "weight": 1.0, "policy": "rules"}],
    "start": "2026-12-01T00:00:00Z",
    "end": "2026-12-31T00:00:00Z",
}
CONSENT = {
    "change_id": "CC-1",
    "customer_id": "C0001",
    "purpose": "marketing",
    "granted": False,
    "updated_at": "2026-12-01T10:00:00Z",
}
# (method, path, body, the role the route belongs to)
ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/v1/offers", offers_body(), "renderer"),
    ("GET", "/v1/customers/C0001/usage-summary", None, "renderer"),
    ("POST", "/v1/events", EVENT, "renderer"),
    ("POST", "/v1/consents", CONSENT, "consent or renderer"),
    ("GET", "/v1/experiments", None, "marketing"),
    ("POST", "/v1/experiments", EXPERIMENT, "marketing"),
    ("GET", "/v1/experiments/exp-auth", None, "marketing"),
    ("GET", "/v1/experiments/exp-auth/report", None, "marketing"),
    ("GET", "/experiments/exp-auth", None, "marketing"),
    ("POST", "/v1/admin/reload", None, "admin"),
]
CALLERS = ["renderer", "marketing", "consent", "admin"]


def _call(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "owner"), ROUTES)
@pytest.mark.parametrize("caller", CALLERS)
def test_roles_reach_their_own_routes_and_admin_reaches_all(
    client: Any, method: str, path: str, body: Any, owner: str, caller: str
) -> None:
    response = _call(client, method, path, body, auth(caller))
    if caller in owner.split(" or ") or caller == "admin":
        assert response.status_code not in {401, 403}, response.text
    else:
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 403
        assert f"needs the {owner} role" in problem["detail"]


@pytest.mark.parametrize(("method", "path", "body", "owner"), ROUTES)
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "send an API key as Authorization: Bearer <key>"),
        (auth("wrong"), "the API key is not known"),
        ({"Authorization": "Basic cmVuZGVyZXI6a2V5"}, "send an API key"),
        ({"Authorization": "Bearer"}, "send an API key"),
    ],
)
def test_no_key_or_a_wrong_key_is_401_with_a_bearer_challenge(
    client: Any,
    method: str,
    path: str,
    body: Any,
    owner: str,
    headers: dict[str, str],
    detail: str,
) -> None:
    response = _call(client, method, path, body, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/openapi.json"])
def test_health_metrics_and_the_schema_need_no_key(client: Any, path: str) -> None:
    assert client.get(path).status_code == 200


def test_keys_map_to_roles() -> None:
    keys = ApiKeys({"k1": "renderer", "k2": "admin"})
    assert (keys.role_of("k1"), keys.role_of("k2")) == ("renderer", "admin")
    assert keys.role_of("k") is None and keys.role_of("k1 ") is None and keys.role_of("") is None


def test_the_settings_accept_exactly_the_roles_of_the_api() -> None:
    assert ROLES == API_ROLES


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="superuser"):
        ApiKeys({"k1": "superuser"})


def test_a_malformed_key_list_stops_the_app(tmp_path: Path) -> None:
    app = make_app(tmp_path, api_keys="renderer-key-0123456789:renderer,k2")
    with pytest.raises(ValueError, match="must be key:role"), running(app):
        pass


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        ("renderer", "renderer", True),
        ("renderer", "marketing", False),
        ("marketing", "admin", False),
        ("consent", "consent", True),
        ("renderer", "consent", False),
        ("admin", "consent", True),
        ("admin", "renderer", True),
        ("admin", "marketing", True),
    ],
)
def test_admin_may_call_everything(role: Any, needed: Any, allowed: bool) -> None:
    assert may_call(role, needed) is allowed


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_the_api_description_is_served_only_when_the_settings_say_so(
    tmp_path: Any, path: str
) -> None:
    with running(make_app(tmp_path)) as client:
        assert client.get(path).status_code == 200
    with running(make_app(tmp_path, open_docs=False)) as client:
        assert client.get(path).status_code == 404


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            "renderer-key-0123456789:renderer,renderer-key-0123456789:admin",
            "OFFERS_API_KEYS entry 2 repeats the key of entry 1: a key has one role",
        ),
        ("short-key-1:renderer", "OFFERS_API_KEYS entry 1: a key must be at least 16 characters"),
        (
            "renderer-key-0123456789:renderer,secret-key-0123456789:owner",
            "OFFERS_API_KEYS entry 2 must be key:role with role "
            "renderer, marketing, consent, admin",
        ),
    ],
)
def test_bad_keys_are_refused_at_start_without_showing_them(
    tmp_path: Any, keys: str, message: str
) -> None:
    with pytest.raises(ValueError) as refused, running(make_app(tmp_path, api_keys=keys)):
        pass
    assert str(refused.value) == message
    for part in ("renderer-key", "0123456789", "short-key", "secret-key"):
        assert part not in str(refused.value)


def test_local_keys_are_written_for_their_owner_only(tmp_path: Any, monkeypatch: Any) -> None:
    import stat

    from pipelines.announce import ensure_api_keys

    monkeypatch.delenv("OFFERS_API_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)
    env_file = tmp_path / ".env"
    env_file.write_text("OFFERS_ONLINE_STORE=sqlite\n")
    env_file.chmod(0o644)
    key = ensure_api_keys(env_file)
    assert len(key) >= 16
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "OFFERS_ONLINE_STORE=sqlite" in env_file.read_text()
