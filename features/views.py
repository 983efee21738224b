"""The feature views and services as plain data: names, keys, features, TTLs and tables.

Declared once, without Feast, so that training's point-in-time join, the invoice run and serving
read the same metadata as the Feast definitions in ``features/repo/`` (built from this module)
without importing Feast. Types: ``float`` (Float64, NaN/None = unknown or unlimited), ``int``
(Int64), ``str`` (String). Usage per month is suffixed ``_m1`` (the newest complete month) to
``_m6``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from core.columns import CUSTOMER_KEY, OFFER_KEY
from core.plan_fit import PLAN_FIT_OUTPUTS

FeatureType = Literal["float", "int", "str"]

OWNER = "features@invoice-offers.example"
TEAM = "invoice-offers"

_MEASURES = ("data_gb", "voice_minutes", "roaming_data_gb")

CUSTOMER_USAGE: dict[str, FeatureType] = {
    **{f"{m}_m{i}": "float" for m in _MEASURES for i in range(1, 7)},
    **{f"overage_sek_m{i}": "float" for i in range(1, 7)},
    "sms_m1": "int",
    "roaming_days_m1": "int",
    "usage_month_m1": "str",  # ISO date of the newest month, for the usage summary's period
    **{f"{m}_avg_{w}m": "float" for m in (*_MEASURES, "sms") for w in (3, 6)},
    **{f"{m}_max_{w}m": "float" for m in (*_MEASURES, "sms") for w in (3, 6)},
    "data_gb_trend_6m": "float",  # least-squares slope, GB per month
    "voice_minutes_trend_6m": "float",
    "overage_sek_avg_3m": "float",
    "months_over_allowance_6m": "int",
    "roaming_days_6m": "int",
    # SMS and roaming days of the five months before the newest (float: a month may be
    # unknown). Not model inputs, which read their windows; the engine needs them to describe
    # an invoice's billing period when the row's newest month is later (inputs.usage_as_of).
    **{f"{m}_m{i}": "float" for m in ("sms", "roaming_days") for i in range(2, 7)},
    # The plan each month was billed on (the contract in force on its last day; "" unknown):
    # the usage summary compares a month's usage with what that plan included, which after a
    # plan change is not today's plan.
    **{f"plan_id_m{i}": "str" for i in range(1, 7)},
}
# Features kept to describe an earlier month, never read by the models.
USAGE_HISTORY_ONLY = frozenset(f"{m}_m{i}" for m in ("sms", "roaming_days") for i in range(2, 7))

CUSTOMER_CONTRACT: dict[str, FeatureType] = {
    "current_plan_id": "str",
    "current_monthly_fee_sek": "float",
    "current_new_customer_fee_sek": "float",
    "current_data_gb": "float",  # NaN = unlimited
    "current_voice_minutes": "float",  # NaN = unlimited
    "current_roaming_data_gb": "float",
    "tenure_months": "int",
    "binding_end_date": "str",  # ISO date of the contract's binding end, "" when it has none
    "months_to_binding_end": "int",  # 0 when not bound
    "plan_changes_24m": "int",
    # ISO date the customer's last contract ended when no contract followed it ("" while one is
    # in force): a final invoice dated after it is a former customer's.
    "contract_ended_on": "str",
}

CUSTOMER_BILLING: dict[str, FeatureType] = {
    "invoice_amount_last_sek": "float",
    "invoice_amount_avg_3m": "float",
    "invoice_amount_trend_6m": "float",
    "invoice_fee_last_sek": "float",
    "reminder_fee_last_sek": "float",
    "invoice_fees_12m_sek": "float",
    "reminder_fees_12m_sek": "float",
    "late_payments_12m": "int",
    "unpaid_reminders": "int",
    "in_collection": "int",
    "days_past_due": "int",
}

CUSTOMER_PROFILE: dict[str, FeatureType] = {
    "age": "int",
    "region": "str",
    "satisfaction": "float",  # survey answer 1–5, NaN when not answered
    "offers_shown_6m": "int",
    "offers_clicked_6m": "int",
    "offers_accepted_12m": "int",
    "offers_declined_6m": "int",
}

# Read before anything else: the consent gate needs these and nothing more.
CUSTOMER_CONSENT: dict[str, FeatureType] = {
    "consent_marketing": "int",
    "consent_profiling": "int",
    "consent_usage_insights": "int",
    "objected_marketing": "int",  # granted once, withdrawn later
    "birth_year": "int",
    "segment": "str",  # contractual, not profiling: non-personalised offers are per segment
}

# Views every materialize loads from the beginning rather than from the last run's end. A consent
# change recorded late (stamped before the last run ended) would otherwise never reach the online
# store, and an objection must hold from the next decision (GDPR Art. 21). The view holds one row
# per customer and change, so a whole reload stays small.
RELOADED_WHOLE = frozenset({"customer_consent"})

# The view every materialize writes last, after the views reloaded whole. Readiness reads one
# offer's attributes from the online store, so a first materialize stopped before its end (killed,
# or failed; Redis has no transaction across views) leaves the store not ready, rather than ready
# with customers whose consent rows are not written yet (every answer 404 unknown).
WRITTEN_LAST = "offer_attributes"

OFFER_ATTRIBUTES: dict[str, FeatureType] = {
    "offer_kind_code": "int",
    "offer_monthly_fee_sek": "float",
    "offer_new_customer_fee_sek": "float",
    "offer_data_gb": "float",  # NaN = unlimited
    "offer_voice_minutes": "float",
    "offer_roaming_data_gb": "float",
    "offer_binding_months": "int",
    "offer_min_tenure_months": "int",
    "offer_identity_code": "int",  # core.plan_fit.offer_identity_code
}

PLAN_FIT: dict[str, FeatureType] = {name: "float" for name in PLAN_FIT_OUTPUTS}

# Monthly snapshots: a point-in-time join looks back at most this far. Consent and offer
# attributes hold until they change (no TTL).
SNAPSHOT_TTL = timedelta(days=400)


@dataclass(frozen=True)
class ViewSpec:
    """One feature view: its entity key, features, TTL (None = unlimited) and descriptions."""

    name: str
    key: str
    features: Mapping[str, FeatureType]
    ttl: timedelta | None
    description: str
    source_description: str
    tags: Mapping[str, str] = field(default_factory=dict)
    # Raised when a release computes the view's values otherwise under the same feature names:
    # `offers features apply` then asks the next materialize to reload every view whole, since
    # an incremental one would keep the stored rows' old values (features.store.apply_repository).
    revision: int = 1


# The tag a registered view carries its revision in; a view registered without it is revision 1.
REVISION_TAG = "revision"

VIEWS: dict[str, ViewSpec] = {
    spec.name: spec
    for spec in (
        ViewSpec(
            "customer_usage",
            CUSTOMER_KEY,
            CUSTOMER_USAGE,
            SNAPSHOT_TTL,
            "Usage of the last six complete months (m1 newest): data, voice, SMS, roaming, "
            "overage; 3- and 6-month means and maxima, trends, months over the allowance.",
            "Monthly usage per customer, known from the next month's first day.",
            {
                "personal_data": "true",
                "consent": "none: the customer's own usage, shown on the invoice",
            },
        ),
        ViewSpec(
            "customer_contract",
            CUSTOMER_KEY,
            CUSTOMER_CONTRACT,
            SNAPSHOT_TTL,
            "The contract in force: plan, fee, allowances (NaN = unlimited), tenure, binding end, "
            "plan changes in 24 months; the day the last contract ended, once the customer left.",
            "The contract in force per customer at each month start and change, and the day "
            "after the customer left.",
            {"personal_data": "true", "consent": "none: contractual"},
            # 2: binding_end_date kept after the binding's end (it was "" from then on).
            revision=2,
        ),
        ViewSpec(
            "customer_billing",
            CUSTOMER_KEY,
            CUSTOMER_BILLING,
            SNAPSHOT_TTL,
            "Invoice amounts and trend, invoice and reminder fees in 12 months, late payments, "
            "unpaid reminders, collection and days past due, as known on each invoice date.",
            "Billing and payment behaviour per customer at each invoice date.",
            {"personal_data": "true", "consent": "none: contractual"},
        ),
        ViewSpec(
            "customer_profile",
            CUSTOMER_KEY,
            CUSTOMER_PROFILE,
            SNAPSHOT_TTL,
            "Age, region, the survey's satisfaction answer and how earlier offers were met.",
            "Age, region, survey answer and offer history per customer and month.",
            {"personal_data": "true", "consent": "profiling"},
        ),
        ViewSpec(
            "customer_consent",
            CUSTOMER_KEY,
            CUSTOMER_CONSENT,
            None,
            "Consent per purpose (marketing, profiling, usage_insights) and marketing objections, "
            "from the exact time each change was recorded; birth year and segment for the "
            "consent gate.",
            "Consent state per customer at signup and at every consent change.",
            {"personal_data": "true", "consent": "read first: decides what else may be read"},
        ),
        ViewSpec(
            "offer_attributes",
            OFFER_KEY,
            OFFER_ATTRIBUTES,
            None,
            "Catalog attributes of each offer: kind, fees, allowances (NaN = unlimited), binding, "
            "minimum tenure.",
            "Catalog attributes per offer from its valid_from.",
            {"personal_data": "false"},
        ),
    )
}

FEATURE_VIEWS: dict[str, dict[str, FeatureType]] = {
    name: dict(spec.features) for name, spec in VIEWS.items()
}
CUSTOMER_VIEWS: tuple[str, ...] = tuple(
    name for name, spec in VIEWS.items() if spec.key == CUSTOMER_KEY
)

# The plan-fit on-demand view, computed from usage, contract and offer attributes.
PLAN_FIT_VIEW = "plan_fit"

RANKER_SERVICE = "offer_ranker_v1"
CHURN_SERVICE = "churn_v1"
USAGE_SUMMARY_SERVICE = "usage_summary_v1"

# Which stored views each feature service reads (the ranker also reads the plan-fit view).
SERVICE_VIEWS: dict[str, tuple[str, ...]] = {
    RANKER_SERVICE: (
        "customer_usage",
        "customer_contract",
        "customer_billing",
        "customer_profile",
        "offer_attributes",
    ),
    CHURN_SERVICE: ("customer_usage", "customer_contract", "customer_billing", "customer_profile"),
    USAGE_SUMMARY_SERVICE: ("customer_usage", "customer_contract", "customer_billing"),
}
SERVICES_WITH_PLAN_FIT: frozenset[str] = frozenset({RANKER_SERVICE})


def feature_table_path(view: str, features_dir: Path | str) -> Path:
    """The Parquet feature table of a view under ``features_dir`` (a file or a folder of parts)."""
    return Path(features_dir) / f"{view}.parquet"


def view_key(view: str) -> str:
    """The entity key column of a view."""
    return VIEWS[view].key


def view_ttl(view: str) -> timedelta | None:
    """The view's TTL (None = unlimited), as Feast applies it in a point-in-time join."""
    return VIEWS[view].ttl
