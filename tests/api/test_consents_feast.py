"""POST /v1/consents over a real Feast online store, SQLite and Redis: a withdrawal is honoured by
the very next decision, and the row written is the row a materialize writes."""

from __future__ import annotations

import datetime as dt

import pytest

from core.settings import Settings
from features.consent_rows import OnlineConsentRows
from features.store import open_store
from tests.factories.api import (
    SNAPSHOT,
    auth,
    feast_app,
    offers_body,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RENDERER, CONSENT = auth("renderer"), auth("consent")


def test_a_withdrawal_is_honoured_by_the_very_next_decision(
    feast_store: tuple[Settings, str],
) -> None:
    settings, project = feast_store
    withdrawn_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    with running(feast_app(settings, project)) as client:
        before = client.post("/v1/offers", json=offers_body(invoice_id="INV-A"), headers=RENDERER)
        assert before.status_code == 200 and before.json()["offers"]
        assert before.json()["policy"] == "model"

        consent = client.post(
            "/v1/consents",
            json={
                "change_id": "CC-WITHDRAW-1",
                "customer_id": "C0001",
                "purpose": "marketing",
                "granted": False,
                "updated_at": withdrawn_at.isoformat(),
            },
            headers=CONSENT,
        )
        assert consent.status_code == 202, consent.text
        assert consent.json()["online"] == "applied"

        after = client.post("/v1/offers", json=offers_body(invoice_id="INV-B"), headers=RENDERER)
        assert after.status_code == 200
        body = after.json()
        assert (body["policy"], body["offers"], body["degraded"]) == ("none", [], None)
        assert body["consent"] == {"marketing": False, "profiling": True, "usage_insights": True}
        # The usage summary is the customer's own data: still there.
        assert body["usage_summary"] is not None

    # The row in the store: the objection, everything else as materialized, the answer's time.
    rows = OnlineConsentRows(open_store(settings, project), settings).read(["C0001"])
    row = rows["C0001"]
    assert (row.values["consent_marketing"], row.values["objected_marketing"]) == (0, 1)
    assert (row.values["consent_profiling"], row.values["segment"]) == (1, "consumer")
    assert row.event_time is not None and row.event_time > SNAPSHOT
    assert abs(row.event_time - withdrawn_at) < dt.timedelta(seconds=1)


def test_a_customer_the_store_has_never_seen_is_stored_for_the_sync(
    feast_store: tuple[Settings, str],
) -> None:
    settings, project = feast_store
    with running(feast_app(settings, project)) as client:
        response = client.post(
            "/v1/consents",
            json={
                "change_id": "CC-UNKNOWN",
                "customer_id": "C9999",
                "purpose": "profiling",
                "granted": True,
                "updated_at": dt.datetime.now(dt.UTC).isoformat(),
            },
            headers=CONSENT,
        )
    assert (response.status_code, response.json()["online"]) == (202, "unknown-customer")
    assert OnlineConsentRows(open_store(settings, project), settings).read(["C9999"]) == {}
