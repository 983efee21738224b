"""Factories for decision-engine tests: a small catalog, customers, fakes for the I/O edges."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from core.catalog import Catalog, LocalisedText, Offer
from features.views import CUSTOMER_BILLING, CUSTOMER_CONTRACT, CUSTOMER_USAGE
from serving.decision.candidates import offer_attributes
from serving.decision.inputs import DecisionRequest
from training.model_inputs import RANKER_FEATURES

INVOICE_DATE = dt.date(2026, 11, 30)


def offer(offer_id: str, kind: str = "plan", **overrides: Any) -> Offer:
    """A catalog entry with the catalog's defaults; titles from the id unless given."""
    values: dict[str, Any] = {
        "offer_id": offer_id,
        "kind": kind,
        "title": LocalisedText(sv=offer_id, en=offer_id),
        "monthly_fee_sek": 0.0,
        "valid_from": dt.date(2020, 1, 1),
        "requires_good_standing": False,
    }
    values.update(overrides)
    return Offer.model_validate(values)


def _plan(offer_id: str, sv: str, en: str, fee: float, data: float | None, **kw: Any) -> Offer:
    return offer(
        offer_id,
        "plan",
        title=LocalisedText(sv=sv, en=en),
        monthly_fee_sek=fee,
        data_gb=data,
        voice_minutes=kw.pop("voice_minutes", None),
        **kw,
    )


def make_catalog(*extra: Offer) -> Catalog:
    """The simulated operator's catalog as docs/data-contract.md describes it (fixed, not read)."""
    offers = [
        _plan(
            "PLAN_1GB",
            "Mobil 1 GB",
            "Mobile 1 GB",
            99.0,
            1,
            voice_minutes=300,
            roaming_data_gb=1,
            segments=("consumer",),
        ),
        _plan(
            "PLAN_5GB",
            "Mobil 5 GB",
            "Mobile 5 GB",
            179.0,
            5,
            new_customer_fee_sek=149.0,
            roaming_data_gb=3,
            segments=("consumer", "business"),
        ),
        _plan(
            "PLAN_15GB",
            "Mobil 15 GB",
            "Mobile 15 GB",
            249.0,
            15,
            new_customer_fee_sek=219.0,
            roaming_data_gb=6,
            requires_good_standing=True,
        ),
        _plan(
            "PLAN_30GB",
            "Mobil 30 GB",
            "Mobile 30 GB",
            299.0,
            30,
            new_customer_fee_sek=279.0,
            roaming_data_gb=10,
            requires_good_standing=True,
        ),
        _plan(
            "PLAN_60GB",
            "Mobil 60 GB",
            "Mobile 60 GB",
            369.0,
            60,
            roaming_data_gb=15,
            binding_months=12,
            requires_good_standing=True,
        ),
        _plan(
            "PLAN_UNLIMITED",
            "Mobil Obegränsad",
            "Mobile Unlimited",
            449.0,
            None,
            new_customer_fee_sek=399.0,
            roaming_data_gb=20,
            binding_months=24,
            requires_good_standing=True,
        ),
        _plan(
            "PLAN_10GB_LEGACY",
            "Mobil 10 GB (äldre)",
            "Mobile 10 GB (legacy)",
            229.0,
            10,
            roaming_data_gb=3,
            valid_from=dt.date(2018, 1, 1),
            valid_to=dt.date(2023, 12, 31),
        ),
        offer(
            "ADDON_DATA_10GB",
            "addon",
            title=LocalisedText(sv="Extra surf 10 GB", en="Extra data 10 GB"),
            monthly_fee_sek=79.0,
            data_gb=10,
            voice_minutes=0,
            roaming_data_gb=0,
            requires_good_standing=True,
        ),
        offer(
            "ADDON_EU_ROAMING",
            "addon",
            title=LocalisedText(sv="EU-surf 10 GB", en="EU roaming 10 GB"),
            monthly_fee_sek=49.0,
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=10,
            requires_good_standing=True,
        ),
        offer(
            "ADDON_EXTRA_SIM",
            "addon",
            title=LocalisedText(sv="Extra SIM-kort", en="Extra SIM card"),
            monthly_fee_sek=39.0,
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=0,
            min_tenure_months=6,
            requires_good_standing=True,
        ),
        offer(
            "ADDON_STREAMING",
            "addon",
            title=LocalisedText(sv="Streamingpaket", en="Streaming bundle"),
            monthly_fee_sek=119.0,
            new_customer_fee_sek=99.0,
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=0,
            binding_months=12,
            valid_from=dt.date(2021, 1, 1),
            segments=("consumer",),
            requires_good_standing=True,
        ),
        offer(
            "LOYALTY_NEW_PRICE",
            "loyalty",
            title=LocalisedText(
                sv="Lojalitetspris: samma pris som nya kunder",
                en="Loyalty price: what new customers pay",
            ),
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=0,
            min_tenure_months=12,
        ),
        offer(
            "PAY_EINVOICE",
            "payment_help",
            title=LocalisedText(
                sv="E-faktura utan fakturaavgift", en="E-invoice without invoice fee"
            ),
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=0,
        ),
        offer(
            "PAY_AUTOGIRO",
            "payment_help",
            title=LocalisedText(
                sv="Autogiro utan fakturaavgift", en="Direct debit without invoice fee"
            ),
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=0,
        ),
        offer(
            "PAY_INSTALMENT",
            "payment_help",
            title=LocalisedText(
                sv="Delbetalning av skulden", en="Instalment plan for what you owe"
            ),
            data_gb=0,
            voice_minutes=0,
            roaming_data_gb=0,
        ),
    ]
    return Catalog(offers=(*offers, *extra))


def account(**overrides: Any) -> dict[str, Any]:
    """A customer on Mobil 15 GB (249 kr, 219 kr for new customers) using about 8 GB a month.

    Not bound, four years a customer, in good standing, no invoice fee, no overage.
    """
    values: dict[str, Any] = {name: 0.0 for name in CUSTOMER_USAGE}
    for month, data in enumerate((8.0, 7.5, 8.5, 8.0, 7.0, 9.0), start=1):
        values[f"data_gb_m{month}"] = data
        values[f"voice_minutes_m{month}"] = 120.0
        values[f"roaming_data_gb_m{month}"] = 0.0
        values[f"overage_sek_m{month}"] = 0.0
    values.update(
        sms_m1=40,
        roaming_days_m1=0,
        usage_month_m1="2026-10-01",
        data_gb_avg_3m=8.0,
        data_gb_max_3m=8.5,
        data_gb_avg_6m=8.0,
        data_gb_max_6m=9.0,
        voice_minutes_avg_3m=120.0,
        voice_minutes_max_3m=120.0,
        months_over_allowance_6m=0,
        roaming_days_6m=0,
    )
    values.update(
        {
            "current_plan_id": "PLAN_15GB",
            "current_monthly_fee_sek": 249.0,
            "current_new_customer_fee_sek": 219.0,
            "current_data_gb": 15.0,
            "current_voice_minutes": float("nan"),
            "current_roaming_data_gb": 6.0,
            "tenure_months": 48,
            "binding_end_date": "",
            "months_to_binding_end": 0,
            "plan_changes_24m": 0,
            "contract_ended_on": "",
        }
    )
    values.update({name: 0 for name in CUSTOMER_BILLING})
    values.update(invoice_amount_last_sek=249.0, invoice_amount_avg_3m=249.0)
    assert set(CUSTOMER_CONTRACT) <= set(values) and set(CUSTOMER_BILLING) <= set(values)
    values.update(overrides)
    # Every month billed on today's plan, unless a test says otherwise.
    for month in range(1, 7):
        values[f"plan_id_m{month}"] = overrides.get(f"plan_id_m{month}", values["current_plan_id"])
    return values


def heavy_user(**overrides: Any) -> dict[str, Any]:
    """A customer on Mobil 5 GB using about 9 GB a month and paying data overage."""
    values = account(
        current_plan_id="PLAN_5GB",
        current_monthly_fee_sek=179.0,
        current_new_customer_fee_sek=149.0,
        current_data_gb=5.0,
        current_roaming_data_gb=3.0,
        data_gb_m1=9.0,
        data_gb_m2=8.5,
        data_gb_m3=9.5,
        data_gb_avg_3m=9.0,
        data_gb_max_3m=9.5,
        overage_sek_m1=116.0,
        overage_sek_m2=101.5,
        overage_sek_m3=130.5,
        overage_sek_avg_3m=116.0,
    )
    values.update(overrides)
    return values


def consent(
    *,
    marketing: bool = True,
    profiling: bool = True,
    usage_insights: bool = True,
    objected: bool = False,
    birth_year: int | None = 1980,
    segment: str = "consumer",
) -> dict[str, Any]:
    return {
        "consent_marketing": int(marketing),
        "consent_profiling": int(profiling),
        "consent_usage_insights": int(usage_insights),
        "objected_marketing": int(objected),
        "birth_year": birth_year,
        "segment": segment,
    }


def profile(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "age": 46,
        "region": "Norrbotten",
        "satisfaction": 3.0,
        "offers_shown_6m": 2,
        "offers_clicked_6m": 1,
        "offers_accepted_12m": 0,
        "offers_declined_6m": 0,
    }
    values.update(overrides)
    return values


def request(**overrides: Any) -> DecisionRequest:
    values: dict[str, Any] = {
        "invoice_id": "INV-2026-11-0001",
        "customer_id": "C0001",
        "invoice_date": INVOICE_DATE,
        "locale": "sv",
        "max_offers": 3,
    }
    values.update(overrides)
    return DecisionRequest(**values)


class ProfilingNotAllowed(AssertionError):
    """read_profile was called although consent does not allow profiling."""


class FakeFeatureSource:
    """One customer's features; records every read and refuses a profile read without consent."""

    def __init__(
        self,
        consent_row: dict[str, Any] | None = None,
        account_row: dict[str, Any] | None = None,
        profile_row: dict[str, Any] | None = None,
    ) -> None:
        self.consent_row = consent() if consent_row is None else consent_row
        self.account_row = account() if account_row is None else account_row
        self.profile_row = profile() if profile_row is None else profile_row
        self.calls: list[str] = []

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        self.calls.append("consent")
        return dict(self.consent_row)

    def read_account(self, customer_id: str) -> dict[str, Any]:
        self.calls.append("account")
        return dict(self.account_row)

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.read_account(customer_id), self.read_profile(customer_id)

    def read_profile(self, customer_id: str) -> dict[str, Any]:
        self.calls.append("profile")
        row = self.consent_row
        birth_year = row.get("birth_year")
        adult = birth_year is not None and INVOICE_DATE.year - birth_year - 1 >= 18
        if not (row["consent_profiling"] and adult and row["consent_marketing"]):
            raise ProfilingNotAllowed(f"profile read with consent {row}")
        return dict(self.profile_row)


class UnknownSource(FakeFeatureSource):
    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        self.calls.append("consent")
        return None


def _attribute_key(values: np.ndarray) -> tuple[float, ...]:
    # Kind, fee, data, roaming identify an offer of make_catalog (NaN as -1 to compare).
    return tuple(float(-1 if np.isnan(v) else v) for v in values)


_KEY_NAMES = ("offer_kind_code", "offer_monthly_fee_sek", "offer_data_gb", "offer_roaming_data_gb")
_KEY_COLUMNS = [RANKER_FEATURES.index(name) for name in _KEY_NAMES]


class FakeScorer:
    """Acceptance per offer id, a fixed churn risk, contributions = weights × row values."""

    def __init__(
        self,
        catalog: Catalog,
        acceptance: Mapping[str, float],
        *,
        churn: float = 0.2,
        default: float = 0.05,
        weights: Callable[[int], float] | None = None,
        model_version: str = "offer-ranker/7",
        segment_rates: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.model_version = model_version
        self.churn = churn
        self.segment_rates = dict(segment_rates or {})
        self.calls: list[tuple[str, int]] = []
        self._by_key: dict[tuple[float, ...], float] = {}
        for item in catalog.offers:
            attributes = offer_attributes(item)
            key = _attribute_key(np.array([attributes[name] for name in _KEY_NAMES]))
            p = acceptance.get(item.offer_id, default)
            # Offers with equal attributes (the payment-help offers) look alike to any model.
            if self._by_key.setdefault(key, p) != p:
                raise ValueError(f"{item.offer_id} has another offer's attributes: same p needed")
        weight = weights or (lambda j: 0.01 * ((j % 7) - 3))
        self._weights = np.array([weight(j) for j in range(len(RANKER_FEATURES))])

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(("acceptance", len(rows)))
        return np.array([self._by_key[_attribute_key(row[_KEY_COLUMNS])] for row in rows])

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(("contributions", len(rows)))
        values = np.nan_to_num(rows) * self._weights
        return np.hstack([values, np.full((len(rows), 1), -1.0)])

    def churn_risks(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(("churn_risks", len(rows)))
        return np.full(len(rows), self.churn)

    def segment_acceptance(self, segment: str) -> Mapping[str, float]:
        return self.segment_rates.get(segment, {})


class BoosterScorer:
    """Two LightGBM boosters behind the Scorer interface, one thread as on the request path."""

    def __init__(self, ranker: Any, churn: Any, model_version: str = "offer-ranker/test") -> None:
        self._ranker = ranker
        self._churn = churn
        self.model_version = model_version

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._ranker.predict(rows, num_threads=1), dtype=float)

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._ranker.predict(rows, pred_contrib=True, num_threads=1), dtype=float)

    def churn_risks(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._churn.predict(rows, num_threads=1), dtype=float)

    def segment_acceptance(self, segment: str) -> Mapping[str, float]:
        return {}
