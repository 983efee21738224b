"""GET /v1/customers/{customer_id}/usage-summary: detail by consent, unknown customers, outages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from serving.offers_response import UsageSummary
from tests.factories.api import (
    FakeFeatures,
    auth,
    customers,
    make_app,
    offers_body,
    opens_on_third_try,
    running,
)

RENDERER = auth("renderer")


def test_the_usage_summary_is_detailed_with_usage_insights(client: Any) -> None:
    response = client.get(
        "/v1/customers/C0001/usage-summary",
        params={"invoice_date": "2026-11-30", "locale": "en"},
        headers=RENDERER,
    )
    assert response.status_code == 200
    summary = UsageSummary.model_validate(response.json())
    assert summary.detail_level == "detailed" and summary.trends and summary.plan_fit
    assert summary.plan.title == "Mobile 5 GB" and summary.plan.monthly_fee_sek == 179.0
    data = next(line for line in summary.usage if line.measure == "data")
    assert (data.used, data.included) == (9.0, 5.0)
    overage = next(c for c in summary.extra_charges if c.kind == "data_overage")
    assert overage.amount_sek == pytest.approx(4 * 29.0) and "29" in overage.explanation


def test_the_usage_summary_is_basic_without_usage_insights_and_shown_without_marketing(
    client: Any,
) -> None:
    basic = client.get("/v1/customers/C0003/usage-summary", headers=RENDERER).json()
    assert basic["detail_level"] == "basic" and basic["trends"] is None
    no_marketing = client.get("/v1/customers/C0004/usage-summary", headers=RENDERER)
    assert no_marketing.status_code == 200


def test_the_usage_summary_of_an_unknown_customer_is_404(client: Any) -> None:
    response = client.get("/v1/customers/C9999/usage-summary", headers=RENDERER)
    assert response.status_code == 404
    assert response.json()["detail"] == "customer C9999 is not known"


@pytest.mark.parametrize(("day", "status"), [("0001-01-31", 422), ("0001-02-01", 200)])
def test_an_invoice_date_without_a_billing_period_is_422_naming_it(
    client: Any, day: str, status: int
) -> None:
    response = client.get(f"/v1/customers/C0001/usage-summary?invoice_date={day}", headers=RENDERER)
    assert response.status_code == status
    if status == 422:
        assert response.json()["errors"][0]["loc"] == ["query", "invoice_date"]
        assert "no billing period" in response.json()["detail"]
    else:
        assert response.json()["period"] in (None, {"start": "0001-01-01", "end": "0001-01-31"})


def test_the_usage_summary_without_the_store_is_503_with_retry_after(tmp_path: Path) -> None:
    features = FakeFeatures()
    features.fail = "timeout"
    with running(make_app(tmp_path, features=features)) as client:
        response = client.get("/v1/customers/C0001/usage-summary", headers=RENDERER)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "the feature store is unavailable; try again shortly"


def test_the_summary_in_an_offer_answer_equals_the_usage_summary_route(client: Any) -> None:
    offers = client.post(
        "/v1/offers", json=offers_body(invoice_id="INV-US-1"), headers=RENDERER
    ).json()
    alone = client.get(
        "/v1/customers/C0001/usage-summary",
        params={"invoice_date": "2026-11-30"},
        headers=RENDERER,
    ).json()
    assert offers["usage_summary"] == alone


def test_a_dependency_can_be_swapped_for_a_test(tmp_path: Path) -> None:
    from serving.api.deps import get_features

    app = make_app(tmp_path)
    only_c0002 = FakeFeatures({"C0002": customers()["C0002"]})
    app.dependency_overrides[get_features] = lambda: only_c0002
    with running(app) as client:
        known = client.get("/v1/customers/C0002/usage-summary", headers=RENDERER)
        gone = client.get("/v1/customers/C0001/usage-summary", headers=RENDERER)
    assert (known.status_code, gone.status_code) == (200, 404)
    assert only_c0002.reads > 0


def test_a_feature_store_that_comes_back_is_reopened_by_a_usage_summary_request(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import serving.app

    monkeypatch.setattr(serving.app, "FEATURE_RETRY_SECONDS", 0.0)
    store = FakeFeatures()
    open_features, _ = opens_on_third_try(store)
    app = make_app(tmp_path, open_features=open_features)
    with running(app) as client:
        down = client.get("/v1/customers/C0001/usage-summary", headers=RENDERER)
        back = client.get("/v1/customers/C0001/usage-summary", headers=RENDERER)
        assert app.state.services.features is store
    assert (down.status_code, back.status_code) == (503, 200)
    assert back.json()["plan"]["plan_id"] == "PLAN_5GB"


def test_an_invoice_date_further_ahead_than_the_offers_route_takes_is_422_naming_it(
    client: Any,
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    last = today + dt.timedelta(days=62)
    for day, status in (
        (last, 200),
        (last + dt.timedelta(days=1), 422),
        (dt.date(9999, 12, 31), 422),
    ):
        response = client.get(
            "/v1/customers/C0001/usage-summary",
            params={"invoice_date": day.isoformat()},
            headers=RENDERER,
        )
        assert response.status_code == status, day
        offers = client.post(
            "/v1/offers",
            json=offers_body(invoice_id=f"INV-{day}", invoice_date=day.isoformat(), dry_run=True),
            headers=RENDERER,
        )
        assert offers.status_code == status, day  # the same window as the offers route's end
    problem = response.json()
    assert problem["type"].endswith("invoice-date-out-of-range")
    assert problem["errors"][0]["loc"] == ["query", "invoice_date"]
    assert f"is after {last.isoformat()} (62 days ahead of today)" in problem["detail"]
    # Old invoices are printed again: a summary from years back is answered.
    old = client.get(
        "/v1/customers/C0001/usage-summary", params={"invoice_date": "2019-03-10"}, headers=RENDERER
    )
    assert old.status_code == 200


@pytest.mark.parametrize("value", ["0", "1764460800", "20261130", "30/11/2026"])
def test_the_usage_summarys_invoice_date_must_be_an_iso_date(client: Any, value: str) -> None:
    response = client.get(
        "/v1/customers/C0001/usage-summary", params={"invoice_date": value}, headers=RENDERER
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["loc"] for error in response.json()["errors"]] == [["query", "invoice_date"]]


def test_after_a_plan_change_the_summary_and_preview_name_the_plan_that_billed_the_period(
    tmp_path: Path,
) -> None:
    """C0001 paid data overage on Mobil 5 GB in October and is on Mobil 30 GB since 1 November:
    the invoice of 30 November bills October's overage, and its summary and preview say so."""
    consent_row, heavy, profile_row = customers()["C0001"]
    moved_up = {
        **heavy,
        "current_plan_id": "PLAN_30GB",
        "current_monthly_fee_sek": 299.0,
        "current_data_gb": 30.0,
        "plan_changes_24m": 1,
    }
    rows = {"C0001": (consent_row, moved_up, profile_row)}
    with running(make_app(tmp_path, features=FakeFeatures(rows))) as client:
        summary = client.get(
            "/v1/customers/C0001/usage-summary",
            params={"invoice_date": "2026-11-30", "locale": "en"},
            headers=RENDERER,
        ).json()
        assert summary["plan"]["plan_id"] == "PLAN_30GB"
        assert summary["period_plan"] == {"plan_id": "PLAN_5GB", "title": "Mobile 5 GB"}
        data = next(line for line in summary["usage"] if line["measure"] == "data")
        assert (data["used"], data["included"]) == (9.0, 5.0)
        overage = next(c for c in summary["extra_charges"] if c["kind"] == "data_overage")
        assert overage["amount_sek"] == heavy["overage_sek_m1"] == 116.0
        page = client.get(
            "/preview/invoices/INV-2026-11-0001",
            params={"customer_id": "C0001", "invoice_date": "2026-11-30", "locale": "en"},
            headers=RENDERER,
        )
        assert page.status_code == 200
        assert "The period was billed on: Mobile 5 GB" in page.text
        assert "You used 4 GB more than the 5 GB included" in page.text
