"""POST /v1/events: stored once, repeats answered 200, another event under a stored id 409,
unknown decisions and offers and impossible times refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from tests.factories.api import auth, offers_body

RENDERER = auth("renderer")


@pytest.fixture
def decision(client: Any) -> dict[str, Any]:
    body: dict[str, Any] = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert body["offers"]
    return body


def _in_three_minutes() -> dt.datetime:
    """A moment after the decision the test just made, with whole seconds."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)).replace(microsecond=0)


def _event(decision: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    later = _in_three_minutes().astimezone(dt.timezone(dt.timedelta(hours=1)))
    event = {
        "event_id": "EV-0001",
        "decision_id": decision["decision_id"],
        "offer_id": decision["offers"][0]["offer_id"],
        "type": "accept",
        "occurred_at": later.isoformat(),
    }
    event.update(overrides)
    return event


def _stored_events(client: Any) -> int:
    log = client.app.state.services.log
    with log.engine.connect() as connection:
        return int(
            connection.execute(
                sa.select(sa.func.count()).select_from(log.tables.events)
            ).scalar_one()
        )


def test_an_event_is_stored_and_answered_202(client: Any, decision: dict[str, Any]) -> None:
    event = _event(decision)
    response = client.post("/v1/events", json=event, headers=RENDERER)
    assert response.status_code == 202
    body = response.json()
    assert body["event_id"] == "EV-0001" and body["type"] == "accept"
    sent = dt.datetime.fromisoformat(event["occurred_at"])
    assert body["occurred_at"] == f"{sent.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S}Z"  # kept in UTC
    stored = client.app.state.services.log.find_event("EV-0001")
    assert stored is not None and stored.offer_id == decision["offers"][0]["offer_id"]


def test_a_decision_id_in_upper_case_names_the_same_decision(
    client: Any, decision: dict[str, Any]
) -> None:
    shouted = decision["decision_id"].upper()
    assert shouted != decision["decision_id"]
    response = client.post(
        "/v1/events", json=_event(decision, decision_id=shouted), headers=RENDERER
    )
    assert response.status_code == 202, response.text
    assert response.json()["decision_id"] == decision["decision_id"]
    # The same event in the case the decision answered is the one stored, not another.
    again = client.post("/v1/events", json=_event(decision), headers=RENDERER)
    assert again.status_code == 200, again.text
    assert _stored_events(client) == 1


def test_the_same_event_again_is_200_and_stored_once(client: Any, decision: dict[str, Any]) -> None:
    event = _event(decision)
    first = client.post("/v1/events", json=event, headers=RENDERER)
    # The same moment written in another zone, or a retry stamped again: the same event, and
    # the first stamp stands.
    moment = dt.datetime.fromisoformat(event["occurred_at"]).astimezone(dt.UTC)
    again = client.post(
        "/v1/events", json={**event, "occurred_at": moment.isoformat()}, headers=RENDERER
    )
    restamped = {**event, "occurred_at": (moment + dt.timedelta(seconds=30)).isoformat()}
    retried = client.post("/v1/events", json=restamped, headers=RENDERER)
    assert (first.status_code, again.status_code, retried.status_code) == (202, 200, 200)
    assert again.json() == first.json() == retried.json()
    assert _stored_events(client) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"type": "decline"},
        {"offer_id": "NO_SUCH_OFFER"},
        {"decision_id": "00000000-0000-0000-0000-000000000000"},
    ],
)
def test_another_event_under_a_stored_event_id_is_409_and_the_first_stands(
    client: Any, decision: dict[str, Any], change: dict[str, Any]
) -> None:
    first = client.post("/v1/events", json=_event(decision), headers=RENDERER)
    other = client.post("/v1/events", json=_event(decision, **change), headers=RENDERER)
    assert (first.status_code, other.status_code) == (202, 409)
    problem = other.json()
    assert problem["type"] == "urn:invoice-offers:problem:event-conflict"
    assert problem["detail"].startswith(
        f"event EV-0001 is stored with another {next(iter(change))}"
    )
    stored = client.app.state.services.log.find_event("EV-0001")
    assert stored is not None and stored.type == "accept"
    assert _stored_events(client) == 1


def test_an_event_before_its_decision_or_ahead_of_the_clock_is_422(
    client: Any, decision: dict[str, Any]
) -> None:
    shown = client.app.state.services.log.shown_in(decision["decision_id"])
    assert shown is not None
    decided_at = shown[0]
    now = dt.datetime.now(dt.UTC)
    for moment, says in (
        (decided_at - dt.timedelta(minutes=6), "is before decision"),
        (dt.datetime(1990, 1, 1, tzinfo=dt.UTC), "is before decision"),
        (now + dt.timedelta(minutes=10), "ahead of the server's clock"),
        (dt.datetime(2999, 12, 31, tzinfo=dt.UTC), "ahead of the server's clock"),
    ):
        response = client.post(
            "/v1/events", json=_event(decision, occurred_at=moment.isoformat()), headers=RENDERER
        )
        assert response.status_code == 422, moment
        assert response.json()["errors"][0]["loc"] == ["body", "occurred_at"]
        assert says in response.json()["detail"]
    # Clocks differ a little: a few minutes before the decision or ahead of now is taken.
    for number, moment in enumerate(
        (decided_at - dt.timedelta(minutes=4), now + dt.timedelta(minutes=4))
    ):
        event = _event(decision, event_id=f"EV-SKEW-{number}", occurred_at=moment.isoformat())
        assert client.post("/v1/events", json=event, headers=RENDERER).status_code == 202
    assert _stored_events(client) == 2


def test_an_unknown_decision_is_422(client: Any, decision: dict[str, Any]) -> None:
    response = client.post(
        "/v1/events", json=_event(decision, decision_id="no-such-decision"), headers=RENDERER
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["detail"] == "no decision no-such-decision is logged"
    assert problem["errors"][0]["loc"] == ["body", "decision_id"]
    assert _stored_events(client) == 0


def test_an_offer_not_in_the_decision_is_422(client: Any, decision: dict[str, Any]) -> None:
    shown = {offer["offer_id"] for offer in decision["offers"]}
    other = next(o for o in ("PLAN_1GB", "PAY_AUTOGIRO", "ADDON_EXTRA_SIM") if o not in shown)
    response = client.post("/v1/events", json=_event(decision, offer_id=other), headers=RENDERER)
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"offer {other} was not shown in decision {decision['decision_id']}"
    )
    assert response.json()["errors"][0]["loc"] == ["body", "offer_id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "purchase"}, "type"),
        ({"occurred_at": "soon"}, "occurred_at"),
        # A number is not a time, though lax parsing would read it as seconds since 1970.
        ({"occurred_at": 0}, "occurred_at"),
        ({"occurred_at": 1764668400.5}, "occurred_at"),
        ({"occurred_at": "1764668400"}, "occurred_at"),
        # The offset would move these past Python's first and last representable instants.
        ({"occurred_at": "0001-01-01T00:00:00+01:00"}, "occurred_at"),
        ({"occurred_at": "9999-12-31T23:59:59-01:00"}, "occurred_at"),
        ({"occurred_at": "1899-12-31T23:59:59Z"}, "occurred_at"),
        ({"event_id": ""}, "event_id"),
        ({"source": "app"}, "source"),
    ],
)
def test_invalid_events_are_422(
    client: Any, decision: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/events", json=_event(decision, **change), headers=RENDERER)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == field


def test_stored_events_are_counted_by_type(client: Any, decision: dict[str, Any]) -> None:
    client.post("/v1/events", json=_event(decision, type="impression"), headers=RENDERER)
    client.post("/v1/events", json=_event(decision, type="impression"), headers=RENDERER)
    client.post(
        "/v1/events", json=_event(decision, event_id="EV-2", type="click"), headers=RENDERER
    )
    text = client.get("/metrics").text
    assert 'offers_events_total{type="impression"} 1.0' in text
    assert 'offers_events_total{type="click"} 1.0' in text
