"""The offer catalog: the shipped file holds what the operator sells; bad files name the entry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from core.catalog import CatalogError, load_catalog

REPOSITORY = Path(__file__).resolve().parents[2]
SHIPPED = REPOSITORY / "catalog" / "offers.yaml"

ENTRY = """
  - offer_id: {offer_id}
    kind: plan
    title: {{sv: "Mobil 5 GB", en: "Mobile 5 GB"}}
    monthly_fee_sek: 179.0
    data_gb: 5
    valid_from: 2024-01-01
    valid_to: {valid_to}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "offers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _entry(offer_id: str, valid_to: str = "null") -> str:
    return ENTRY.format(offer_id=offer_id, valid_to=valid_to)


# --- the shipped catalog -------------------------------------------------------------------------


def test_the_shipped_catalog_has_six_current_plans_priced_99_to_449() -> None:
    catalog = load_catalog(SHIPPED)
    today = dt.date(2026, 11, 30)

    current = [plan for plan in catalog.plans if plan.is_valid_on(today)]

    assert len(current) >= 6
    fees = sorted(plan.monthly_fee_sek for plan in current)
    assert fees[0] == 99.0
    assert fees[-1] == 449.0
    assert all(99.0 <= plan.monthly_fee_sek <= 449.0 for plan in catalog.plans)


def test_the_shipped_catalog_keeps_a_legacy_plan_no_longer_sold() -> None:
    catalog = load_catalog(SHIPPED)

    legacy = [plan for plan in catalog.plans if plan.valid_to is not None]

    assert legacy, "old contracts name plans that are no longer sold"
    assert all(not plan.is_valid_on(dt.date(2026, 11, 30)) for plan in legacy)


def test_some_plans_are_cheaper_for_new_customers() -> None:
    catalog = load_catalog(SHIPPED)

    cheaper = [
        plan.offer_id
        for plan in catalog.plans
        if plan.new_customer_fee_sek is not None
        and plan.new_customer_fee_sek < plan.monthly_fee_sek
    ]

    assert len(cheaper) >= 2
    assert catalog.by_id()["PLAN_30GB"].price_for_new_customers == 279.0


def test_the_shipped_catalog_has_addons_loyalty_and_payment_help() -> None:
    catalog = load_catalog(SHIPPED)
    kinds = {offer.offer_id: offer.kind for offer in catalog.offers}

    assert sum(kind == "addon" for kind in kinds.values()) >= 2
    assert kinds["LOYALTY_NEW_PRICE"] == "loyalty"
    assert {"PAY_EINVOICE", "PAY_AUTOGIRO", "PAY_INSTALMENT"} <= {
        offer_id for offer_id, kind in kinds.items() if kind == "payment_help"
    }


def test_titles_exist_in_swedish_and_english() -> None:
    offer = load_catalog(SHIPPED).by_id()["PLAN_UNLIMITED"]

    assert offer.title.get("sv") == "Mobil Obegränsad"
    assert offer.title.get("en") == "Mobile Unlimited"
    assert offer.data_gb is None  # unlimited


# --- bad catalogs --------------------------------------------------------------------------------


def test_a_duplicate_offer_id_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "offers:" + _entry("PLAN_5GB") + _entry("PLAN_5GB"))

    with pytest.raises(CatalogError) as raised:
        load_catalog(path)

    message = str(raised.value)
    assert str(path) in message
    assert "PLAN_5GB appears more than once" in message


def test_a_missing_title_names_the_entry_and_the_field(tmp_path: Path) -> None:
    entry = _entry("PLAN_NO_TITLE").replace(
        '    title: {sv: "Mobil 5 GB", en: "Mobile 5 GB"}\n', ""
    )
    path = _write(tmp_path, "offers:" + _entry("PLAN_5GB") + entry)

    with pytest.raises(CatalogError) as raised:
        load_catalog(path)

    message = str(raised.value)
    assert "offer PLAN_NO_TITLE: title" in message
    assert "required" in message
    assert "PLAN_5GB" not in message


def test_valid_to_before_valid_from_names_the_entry(tmp_path: Path) -> None:
    path = _write(tmp_path, "offers:" + _entry("PLAN_OLD", valid_to="2023-06-30"))

    with pytest.raises(CatalogError) as raised:
        load_catalog(path)

    message = str(raised.value)
    assert "offer PLAN_OLD" in message
    assert "valid_to is before valid_from" in message


def test_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "offers:\n  - offer_id: PLAN_5GB\n    title: {sv: [unclosed\n")

    with pytest.raises(CatalogError, match="not valid YAML") as raised:
        load_catalog(path)

    assert str(path) in str(raised.value)


def test_yaml_without_the_offers_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "plans:" + _entry("PLAN_5GB"))

    with pytest.raises(CatalogError, match="one key 'offers'"):
        load_catalog(path)


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(CatalogError) as raised:
        load_catalog(path)

    assert str(raised.value) == f"{path}: catalog file not found"
