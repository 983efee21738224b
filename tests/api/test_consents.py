"""POST /v1/consents on the fake store: who may call it, what it refuses, what it stores, what
reaches the online store, and what it answers when the store is down."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa

from serving.decision_log.consents import find_consent_change
from tests.factories.api import CONSENT_STAMPED, FakeFeatures, auth, offers_body

CONSENT = auth("consent")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "change_id": "CC-0001",
        "customer_id": "C0001",
        "purpose": "marketing",
        "granted": False,
        "updated_at": (NOW - dt.timedelta(minutes=1)).isoformat(),
    }
    body.update(overrides)
    return body


def _consent_row(features: FakeFeatures, customer_id: str) -> dict[str, Any]:
    return dict(features.rows[customer_id][0])


def _received_at(client: Any, change_id: str) -> str:
    stored = find_consent_change(client.app.state.services.log, change_id)
    assert stored is not None
    return stored.received_at.isoformat().replace("+00:00", "Z")


def _stored(client: Any) -> int:
    log = client.app.state.services.log
    with log.engine.connect() as connection:
        query = sa.select(sa.func.count()).select_from(log.tables.consent_changes)
        return int(connection.execute(query).scalar_one())


@pytest.mark.parametrize("role", ["consent", "renderer", "admin"])
def test_the_consent_role_the_renderer_and_admin_may_record_a_consent(
    client: Any, role: str
) -> None:
    response = client.post("/v1/consents", json=_body(), headers=auth(role))
    assert response.status_code == 202


def test_the_marketing_role_is_refused(client: Any) -> None:
    response = client.post("/v1/consents", json=_body(), headers=auth("marketing"))
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "this route needs the consent or renderer role; the key has marketing"
    )
    assert _stored(client) == 0


def test_an_answer_as_the_product_contract_writes_it_is_taken_and_honoured(
    client: Any, features: FakeFeatures
) -> None:
    # No change_id and no updated_at: the answer holds from when it was received.
    renderer = auth("renderer")
    before = dt.datetime.now(dt.UTC)
    answer = {"customer_id": "C0001", "purpose": "marketing", "granted": False}
    response = client.post("/v1/consents", json=answer, headers=renderer)
    assert response.status_code == 202
    body = response.json()
    assert body["online"] == "applied"
    assert before <= dt.datetime.fromisoformat(body["updated_at"]) <= dt.datetime.now(dt.UTC)
    assert body["change_id"].startswith("answer-")
    assert _consent_row(features, "C0001")["consent_marketing"] == 0
    decided = client.post("/v1/offers", json=offers_body(invoice_id="INV-C"), headers=renderer)
    assert (decided.json()["policy"], decided.json()["offers"]) == ("none", [])
    # With its updated_at, the same answer again is the same change: stored once.
    stamped = {**answer, "updated_at": (NOW - dt.timedelta(minutes=2)).isoformat()}
    first = client.post("/v1/consents", json=stamped, headers=renderer)
    again = client.post("/v1/consents", json=stamped, headers=renderer)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["change_id"] == first.json()["change_id"] != body["change_id"]
    assert _stored(client) == 2


def test_a_withdrawal_is_stored_and_applied_to_the_online_row(
    client: Any, features: FakeFeatures
) -> None:
    before = _consent_row(features, "C0001")
    response = client.post("/v1/consents", json=_body(), headers=CONSENT)
    assert response.status_code == 202
    body = response.json()
    assert body["online"] == "applied"
    assert (body["change_id"], body["customer_id"], body["purpose"], body["granted"]) == (
        "CC-0001",
        "C0001",
        "marketing",
        False,
    )
    assert body["updated_at"] == (NOW - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    after = _consent_row(features, "C0001")
    # The whole row is written: the purpose, the objection, and everything else as it was.
    assert after == {**before, "consent_marketing": 0, "objected_marketing": 1}
    # Stamped with the answer's time, the row's being older.
    assert features.consent_times["C0001"] == NOW - dt.timedelta(minutes=1)
    stored = find_consent_change(client.app.state.services.log, "CC-0001")
    assert stored is not None and stored.applied_at is not None
    assert stored.received_at.isoformat().replace("+00:00", "Z") == body["received_at"]


def test_the_next_decision_honours_a_withdrawal(client: Any) -> None:
    renderer = auth("renderer")
    first = client.post("/v1/offers", json=offers_body(invoice_id="INV-1"), headers=renderer)
    assert first.json()["offers"]
    assert client.post("/v1/consents", json=_body(), headers=CONSENT).status_code == 202
    after = client.post("/v1/offers", json=offers_body(invoice_id="INV-2"), headers=renderer)
    body = after.json()
    assert (body["policy"], body["offers"], body["consent"]["marketing"]) == ("none", [], False)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"updated_at": "2026-12-01T10:00:00"}, "updated_at", "timezone"),
        (
            {"updated_at": (NOW + dt.timedelta(minutes=10)).isoformat()},
            "updated_at",
            "5 minutes ahead",
        ),
        ({"updated_at": 1764583200}, "updated_at", "ISO 8601"),
        ({"purpose": "newsletter"}, "purpose", "marketing"),
        ({"granted": "false"}, "granted", "boolean"),
        ({"change_id": "has space"}, "change_id", "pattern"),
        ({"customer_id": ""}, "customer_id", "at least 1"),
    ],
)
def test_an_invalid_answer_is_422_naming_the_field(
    client: Any, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = client.post("/v1/consents", json=_body(**overrides), headers=CONSENT)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["body", field]
    assert problem["detail"].startswith(f"{field}: ") and message in problem["detail"]
    assert _stored(client) == 0


def test_an_unknown_field_is_422(client: Any) -> None:
    response = client.post("/v1/consents", json=_body(channel="web"), headers=CONSENT)
    assert response.status_code == 422


def test_an_answer_a_little_ahead_of_the_clock_is_taken(client: Any) -> None:
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4)).isoformat()
    response = client.post("/v1/consents", json=_body(updated_at=ahead), headers=CONSENT)
    assert response.status_code == 202


def test_the_same_change_again_is_200_with_the_stored_record(
    client: Any, features: FakeFeatures
) -> None:
    first = client.post("/v1/consents", json=_body(), headers=CONSENT)
    writes = features.writes
    # The same moment written in another zone is the same answer.
    moment = (NOW - dt.timedelta(minutes=1)).astimezone(dt.timezone(dt.timedelta(hours=2)))
    again = client.post("/v1/consents", json=_body(updated_at=moment.isoformat()), headers=CONSENT)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    assert features.writes == writes  # applied already: not written again
    assert _stored(client) == 1


def test_the_same_change_id_with_another_answer_is_409(client: Any) -> None:
    assert client.post("/v1/consents", json=_body(), headers=CONSENT).status_code == 202
    response = client.post("/v1/consents", json=_body(granted=True), headers=CONSENT)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:invoice-offers:problem:consent-change-conflict"
    assert problem["detail"] == "change CC-0001 was stored before with another answer"
    stored = find_consent_change(client.app.state.services.log, "CC-0001")
    assert stored is not None and stored.granted is False


def test_an_older_answer_after_a_newer_one_is_superseded(
    client: Any, features: FakeFeatures
) -> None:
    newer = _body(change_id="CC-NEW", granted=False)
    older = _body(
        change_id="CC-OLD", granted=True, updated_at=(NOW - dt.timedelta(hours=1)).isoformat()
    )
    assert client.post("/v1/consents", json=newer, headers=CONSENT).json()["online"] == "applied"
    row, writes = _consent_row(features, "C0001"), features.writes
    response = client.post("/v1/consents", json=older, headers=CONSENT)
    assert (response.status_code, response.json()["online"]) == (202, "superseded")
    assert _consent_row(features, "C0001") == row and features.writes == writes
    assert _stored(client) == 2  # stored all the same, for the record


def test_another_purpose_is_not_superseded_by_a_newer_answer(
    client: Any, features: FakeFeatures
) -> None:
    client.post("/v1/consents", json=_body(change_id="CC-1"), headers=CONSENT)
    older_other = _body(
        change_id="CC-2",
        purpose="usage_insights",
        granted=False,
        updated_at=(NOW - dt.timedelta(hours=1)).isoformat(),
    )
    response = client.post("/v1/consents", json=older_other, headers=CONSENT)
    assert response.json()["online"] == "applied"
    row = _consent_row(features, "C0001")
    assert (row["consent_marketing"], row["consent_usage_insights"]) == (0, 0)
    # The row's time never goes back.
    assert features.consent_times["C0001"] == NOW - dt.timedelta(minutes=1)


def test_a_grant_older_than_the_online_row_waits_for_the_sync(
    client: Any, features: FakeFeatures
) -> None:
    """The online row changed after the grant was given, for a purpose it does not name: the
    consents table may hold a newer withdrawal, which only the sync can see."""
    old_grant = _body(
        customer_id="C0004",
        granted=True,
        updated_at=(CONSENT_STAMPED - dt.timedelta(days=1)).isoformat(),
    )
    response = client.post("/v1/consents", json=old_grant, headers=CONSENT)
    assert (response.status_code, response.json()["online"]) == (202, "deferred")
    assert _consent_row(features, "C0004")["consent_marketing"] == 0
    stored = find_consent_change(client.app.state.services.log, "CC-0001")
    assert stored is not None and stored.applied_at is None
    # A withdrawal as old is applied: it only takes consent away.
    old_withdrawal = _body(
        change_id="CC-0002",
        customer_id="C0003",
        purpose="marketing",
        updated_at=(CONSENT_STAMPED - dt.timedelta(days=1)).isoformat(),
    )
    response = client.post("/v1/consents", json=old_withdrawal, headers=CONSENT)
    assert response.json()["online"] == "applied"
    assert _consent_row(features, "C0003")["consent_marketing"] == 0
    assert features.consent_times["C0003"] == CONSENT_STAMPED  # the row's newer time is kept


def test_an_answer_the_row_already_holds_is_applied_without_a_write(
    client: Any, features: FakeFeatures
) -> None:
    response = client.post("/v1/consents", json=_body(granted=True), headers=CONSENT)
    assert response.json()["online"] == "applied" and features.writes == 0


def test_a_customer_the_store_has_never_seen_is_stored_for_later(
    client: Any, features: FakeFeatures
) -> None:
    response = client.post("/v1/consents", json=_body(customer_id="C-NEW"), headers=CONSENT)
    assert (response.status_code, response.json()["online"]) == (202, "unknown-customer")
    assert "C-NEW" not in features.rows
    stored = find_consent_change(client.app.state.services.log, "CC-0001")
    assert stored is not None and stored.applied_at is None


def test_a_withdrawal_after_an_earlier_stored_grant_is_an_objection(
    client: Any, features: FakeFeatures
) -> None:
    """C0004 never granted marketing as far as the online row tells; a grant stored while the
    store was down still makes the later withdrawal an objection."""
    features.fail = "timeout"
    grant = _body(
        change_id="CC-GRANT",
        customer_id="C0004",
        granted=True,
        updated_at=(NOW - dt.timedelta(minutes=2)).isoformat(),
    )
    assert client.post("/v1/consents", json=grant, headers=CONSENT).status_code == 503
    features.fail = None
    withdrawal = _body(change_id="CC-WITHDRAW", customer_id="C0004")
    assert client.post("/v1/consents", json=withdrawal, headers=CONSENT).status_code == 202
    row = _consent_row(features, "C0004")
    assert (row["consent_marketing"], row["objected_marketing"]) == (0, 1)
    # The grant, sent again, is now older than a stored withdrawal: superseded.
    again = client.post("/v1/consents", json=grant, headers=CONSENT)
    assert (again.status_code, again.json()["online"]) == (200, "superseded")


def test_a_store_that_is_down_answers_503_and_a_retry_applies_the_stored_change(
    client: Any, features: FakeFeatures
) -> None:
    features.fail = "timeout"
    down = client.post("/v1/consents", json=_body(), headers=CONSENT)
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    assert down.headers["retry-after"] == "1"
    problem = down.json()
    assert problem["type"] == "urn:invoice-offers:problem:feature-store-unavailable"
    assert "the consent change is stored" in problem["detail"]
    assert "change_id CC-0001 is sent again" in problem["detail"]
    assert "offers consents sync" in problem["detail"]
    stored = find_consent_change(client.app.state.services.log, "CC-0001")
    assert stored is not None and stored.applied_at is None
    assert _consent_row(features, "C0001")["consent_marketing"] == 1

    features.fail = None
    retry = client.post("/v1/consents", json=_body(), headers=CONSENT)
    assert (retry.status_code, retry.json()["online"]) == (200, "applied")
    assert retry.json()["received_at"] == _received_at(client, "CC-0001")
    assert _consent_row(features, "C0001")["consent_marketing"] == 0
    stored = find_consent_change(client.app.state.services.log, "CC-0001")
    assert stored is not None and stored.applied_at is not None


def test_an_answer_without_change_id_stored_while_the_store_is_down_names_its_id(
    client: Any, features: FakeFeatures
) -> None:
    answer = {key: value for key, value in _body().items() if key != "change_id"}
    features.fail = "timeout"
    down = client.post("/v1/consents", json=answer, headers=CONSENT)
    assert down.status_code == 503
    named = re.search(r"stored as change (answer-[0-9a-f]{40})", down.json()["detail"])
    assert named is not None and "with its updated_at" in down.json()["detail"]
    features.fail = None
    retry = client.post("/v1/consents", json=answer, headers=CONSENT)
    assert (retry.status_code, retry.json()["change_id"]) == (200, named.group(1))
    assert retry.json()["online"] == "applied" and _stored(client) == 1


def test_a_change_id_sent_again_without_updated_at_is_the_same_change(
    client: Any, features: FakeFeatures
) -> None:
    answer = {key: value for key, value in _body().items() if key != "updated_at"}
    features.fail = "timeout"
    down = client.post("/v1/consents", json=answer, headers=CONSENT)
    assert down.status_code == 503  # stored, not applied: the documented recovery is a resend
    features.fail = None
    again = client.post("/v1/consents", json=answer, headers=CONSENT)
    assert (again.status_code, again.json()["online"]) == (200, "applied")
    assert _consent_row(features, "C0001")["consent_marketing"] == 0
    # Another answer under the same id is still a conflict.
    other = client.post("/v1/consents", json={**answer, "granted": True}, headers=CONSENT)
    assert other.status_code == 409
    assert _stored(client) == 1


def test_a_store_that_never_opened_answers_503(tmp_path: Any) -> None:
    from tests.factories.api import make_app, running

    def cannot_open(settings: Any) -> Any:
        raise ConnectionError("no store")

    with running(make_app(tmp_path, open_features=cannot_open)) as client:
        response = client.post("/v1/consents", json=_body(), headers=CONSENT)
        assert response.status_code == 503
        assert response.json()["type"].endswith("feature-store-unavailable")
        assert _stored(client) == 1


def test_new_changes_are_counted_by_what_the_store_holds(client: Any) -> None:
    client.post("/v1/consents", json=_body(), headers=CONSENT)
    client.post("/v1/consents", json=_body(), headers=CONSENT)  # a repeat: not counted
    client.post("/v1/consents", json=_body(change_id="CC-2", customer_id="C-NEW"), headers=CONSENT)
    text = client.get("/metrics").text
    assert 'offers_consent_changes_total{online="applied"} 1.0' in text
    assert 'offers_consent_changes_total{online="unknown-customer"} 1.0' in text
