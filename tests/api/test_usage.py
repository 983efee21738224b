"""The usage summary over the API: its period follows the invoice's date."""

from __future__ import annotations

from pathlib import Path

from tests.factories.api import auth, make_app, offers_body, running


def test_the_usage_summary_describes_the_invoice_dates_billing_period(tmp_path: Path) -> None:
    """The store's newest month is October; an invoice of 15 October describes September, one of
    30 November describes October: never a month that had not ended on the invoice's date."""
    with running(make_app(tmp_path)) as client:
        periods = {}
        for invoice_date in ("2026-10-15", "2026-11-30"):
            answer = client.get(
                f"/v1/customers/C0001/usage-summary?invoice_date={invoice_date}",
                headers=auth("renderer"),
            )
            assert answer.status_code == 200
            periods[invoice_date] = answer.json()["period"]
        offers = client.post(
            "/v1/offers",
            json=offers_body(invoice_id="INV-OCT", invoice_date="2026-10-15"),
            headers=auth("renderer"),
        ).json()
    assert periods["2026-10-15"] == {"start": "2026-09-01", "end": "2026-09-30"}
    assert periods["2026-11-30"] == {"start": "2026-10-01", "end": "2026-10-31"}
    # The decision's own summary follows the same rule, through the same code.
    assert offers["usage_summary"]["period"] == periods["2026-10-15"]
