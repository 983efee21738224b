"""Properties of the consent gate over many generated cases: no invoice date a caller may send
profiles a customer who is under 18 today, and a consent withdrawal stamped before the last
materialize still holds from the very next decision."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import Settings
from features.consent_rows import ConsentRowWrite
from tests.factories.api import (
    SNAPSHOT,
    FakeFeatures,
    auth,
    customers,
    feast_app,
    make_app,
    offers_body,
    running,
)
from tests.factories.decision import consent, heavy_user, profile

RENDERER, CONSENT = auth("renderer"), auth("consent")
# What the app accepts by default (Settings.invoice_date_past_days / _future_days).
PAST_DAYS, FUTURE_DAYS = 400, 62


class ProfileReads(FakeFeatures):
    """The fake store, noting each customer whose profile features were read."""

    def __init__(self, rows: Any) -> None:
        super().__init__(rows)
        self.profiled: list[str] = []

    def read_profile(self, customer_id: str) -> dict[str, Any]:
        self.profiled.append(customer_id)
        return super().read_profile(customer_id)


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def test_no_invoice_date_in_the_window_profiles_a_customer_under_18_today(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    eighteen_years_ago = _years_before(today, 18)
    features = ProfileReads(
        {"ADULT": (consent(birth_year=1980), heavy_user(), profile(age=46))} | customers()
    )
    invoices = itertools.count(1)
    with running(make_app(tmp_path, features=features)) as client:
        # The same app profiles an adult with every consent: the property below can fail.
        adult = client.post(
            "/v1/offers",
            json=offers_body(invoice_id="INV-ADULT", customer_id="ADULT"),
            headers=RENDERER,
        ).json()
        assert adult["policy"] == "model" and adult["offers"]
        assert all(offer["personalised"] and offer["contributions"] for offer in adult["offers"])
        assert features.profiled == ["ADULT"]

        @settings(max_examples=60, deadline=None)
        @given(
            born=st.dates(eighteen_years_ago + dt.timedelta(days=1), today),
            invoice_date=st.dates(
                today - dt.timedelta(days=PAST_DAYS), today + dt.timedelta(days=FUTURE_DAYS)
            ),
        )
        def minor_is_never_profiled(born: dt.date, invoice_date: dt.date) -> None:
            # Every consent granted; only the birth year is stored, as in the input tables.
            customer_id = f"MINOR-{born.isoformat()}"
            features.rows[customer_id] = (
                consent(birth_year=born.year),
                heavy_user(),
                profile(age=17),
            )
            features.profiled.clear()
            body = offers_body(
                invoice_id=f"INV-MINOR-{next(invoices)}",
                customer_id=customer_id,
                invoice_date=invoice_date.isoformat(),
            )
            response = client.post("/v1/offers", json=body, headers=RENDERER)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["policy"] == "non_personalised", (born, invoice_date, answer["policy"])
            assert not any(o["personalised"] or o["contributions"] for o in answer["offers"])
            assert features.profiled == []

        minor_is_never_profiled()


GRANTED = consent()


@pytest.mark.integration
@pytest.mark.slow
def test_a_withdrawal_stamped_before_the_last_materialize_holds_from_the_next_decision(
    feast_store: tuple[Settings, str],
) -> None:
    store_settings, project = feast_store
    materialized_at = dt.datetime.now(dt.UTC)
    invoices = itertools.count(1)
    with running(feast_app(store_settings, project)) as client:
        services = client.app.state.services
        source = services.feature_store.current()
        assert source is not None

        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            purpose=st.sampled_from(["marketing", "profiling"]),
            # From well before the store's newest values to a second before the materialize.
            stamped_before=st.timedeltas(
                min_value=dt.timedelta(seconds=1),
                max_value=materialized_at - SNAPSHOT + dt.timedelta(days=90),
            ),
        )
        def withdrawal_holds(purpose: str, stamped_before: dt.timedelta) -> None:
            # As a materialize leaves it: every consent granted, the row dated by its values,
            # and no answer received through the API yet.
            source.write_consent_row(ConsentRowWrite("C0001", dict(GRANTED), SNAPSHOT))
            with services.log.engine.begin() as connection:
                connection.execute(sa.delete(services.log.tables.consent_changes))
            number = next(invoices)
            before = client.post(
                "/v1/offers",
                json=offers_body(invoice_id=f"INV-P-{number}-A"),
                headers=RENDERER,
            ).json()
            assert before["policy"] == "model" and before["offers"]

            withdrawal = {
                "change_id": f"CC-P-{number}",
                "customer_id": "C0001",
                "purpose": purpose,
                "granted": False,
                "updated_at": (materialized_at - stamped_before).isoformat(),
            }
            stored = client.post("/v1/consents", json=withdrawal, headers=CONSENT)
            assert stored.status_code == 202, stored.text
            assert stored.json()["online"] == "applied"

            after = client.post(
                "/v1/offers",
                json=offers_body(invoice_id=f"INV-P-{number}-B"),
                headers=RENDERER,
            ).json()
            assert after["consent"][purpose] is False
            if purpose == "marketing":
                assert (after["policy"], after["offers"]) == ("none", [])
            else:
                assert after["policy"] == "non_personalised"
                assert not any(o["personalised"] or o["contributions"] for o in after["offers"])

        withdrawal_holds()
