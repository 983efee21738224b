"""`offers customers erase ID`: the customer leaves the decision log and the online store."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from core.settings import Settings
from features.materialize import whole_reload_requested
from features.online import read_online
from features.store import open_store
from pipelines.customer_erasure import erase_customer
from serving.decision_log import DecisionLog
from tests.factories.api import (
    auth,
    feast_app,
    offers_body,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RENDERER, CONSENT = auth("renderer"), auth("consent")


def _rows_of(log: DecisionLog, customer_id: str) -> dict[str, int]:
    tables = log.tables
    with log.engine.connect() as connection:
        decisions = [
            row[0]
            for row in connection.execute(
                sa.select(tables.decisions.c.decision_id).where(
                    tables.decisions.c.customer_id == customer_id
                )
            )
        ]
        return {
            "decisions": len(decisions),
            "events": connection.execute(
                sa.select(sa.func.count())
                .select_from(tables.events)
                .where(tables.events.c.decision_id.in_(decisions))
            ).scalar_one(),
            "consent_changes": connection.execute(
                sa.select(sa.func.count())
                .select_from(tables.consent_changes)
                .where(tables.consent_changes.c.customer_id == customer_id)
            ).scalar_one(),
        }


def test_an_erased_customer_is_gone_and_only_counts_remain(
    feast_store: tuple[Settings, str],
) -> None:
    settings, project = feast_store
    with running(feast_app(settings, project)) as client:
        for invoice in ("INV-E1", "INV-E2"):
            answer = client.post(
                "/v1/offers", json=offers_body(invoice_id=invoice), headers=RENDERER
            )
            assert answer.status_code == 200 and answer.json()["offers"]
        decision = answer.json()
        event = {
            "event_id": "EV-E1",
            "decision_id": decision["decision_id"],
            "offer_id": decision["offers"][0]["offer_id"],
            "type": "impression",
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        assert client.post("/v1/events", json=event, headers=RENDERER).status_code == 202
        consent = {
            "change_id": "CC-E1",
            "customer_id": "C0001",
            "purpose": "profiling",
            "granted": False,
            "updated_at": (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat(),
        }
        assert client.post("/v1/consents", json=consent, headers=CONSENT).status_code == 202
        other = offers_body(invoice_id="INV-OTHER", customer_id="C0002")
        assert client.post("/v1/offers", json=other, headers=RENDERER).status_code == 200

    online = open_store(settings, project)
    before = read_online(online, "C0001", ["customer_consent:segment", "customer_usage:sms_m1"])
    assert before["segment"] == "consumer"
    log = DecisionLog(settings.database_url)
    assert _rows_of(log, "C0001") == {"decisions": 2, "events": 1, "consent_changes": 1}

    assert whole_reload_requested(settings) is None
    erased = erase_customer(settings, "C0001", store=online)
    assert (erased.log.decisions, erased.log.events, erased.log.consent_changes) == (2, 1, 1)
    # The next materialize reloads every view, not the consent view alone: the customer comes
    # back whole, or not at all, while the source tables hold them.
    assert whole_reload_requested(settings) == "customer values were erased from the online store"
    assert erased.log.offers_shown >= 2 and erased.online_values > 20
    assert "C0001" not in erased.describe()

    assert _rows_of(log, "C0001") == {"decisions": 0, "events": 0, "consent_changes": 0}
    after = read_online(online, "C0001", ["customer_consent:segment", "customer_usage:sms_m1"])
    assert after["segment"] is None and after["sms_m1"] is None
    # Another customer is untouched, in the log and in the store.
    assert _rows_of(log, "C0002")["decisions"] == 1
    assert read_online(online, "C0002", ["customer_consent:segment"])["segment"] == "consumer"
    # Only counts remain: a row without the customer's id.
    with log.engine.connect() as connection:
        kept = connection.execute(sa.select(log.tables.erasures)).mappings().one()
    assert (kept["decisions"], kept["events"], kept["online_values"]) == (
        2,
        1,
        erased.online_values,
    )
    assert "C0001" not in str(dict(kept))
    log.close()

    # Erasing again finds nothing and says so.
    again = erase_customer(settings, "C0001", store=online)
    assert again.log.total == 0 and again.online_values == 0
