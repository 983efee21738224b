"""Feature names per feature view, defined once and imported wherever features are read.

Types: ``float`` (Float64, NaN/None = unknown or unlimited), ``int`` (Int64), ``str`` (String).
Usage per month is suffixed ``_m1`` (the newest complete month) to ``_m6``.
"""

from __future__ import annotations

from typing import Literal

from features.plan_fit import PLAN_FIT_OUTPUTS

FeatureType = Literal["float", "int", "str"]

CUSTOMER_KEY = "customer_id"
OFFER_KEY = "offer_id"
EVENT_TIMESTAMP = "event_timestamp"

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
}

CUSTOMER_CONTRACT: dict[str, FeatureType] = {
    "current_plan_id": "str",
    "current_monthly_fee_sek": "float",
    "current_new_customer_fee_sek": "float",
    "current_data_gb": "float",  # NaN = unlimited
    "current_voice_minutes": "float",  # NaN = unlimited
    "current_roaming_data_gb": "float",
    "tenure_months": "int",
    "binding_end_date": "str",  # ISO date, "" when not bound
    "months_to_binding_end": "int",  # 0 when not bound
    "plan_changes_24m": "int",
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

OFFER_ATTRIBUTES: dict[str, FeatureType] = {
    "offer_kind_code": "int",
    "offer_monthly_fee_sek": "float",
    "offer_new_customer_fee_sek": "float",
    "offer_data_gb": "float",  # NaN = unlimited
    "offer_voice_minutes": "float",
    "offer_roaming_data_gb": "float",
    "offer_binding_months": "int",
    "offer_min_tenure_months": "int",
}

PLAN_FIT: dict[str, FeatureType] = {name: "float" for name in PLAN_FIT_OUTPUTS}

FEATURE_VIEWS: dict[str, dict[str, FeatureType]] = {
    "customer_usage": CUSTOMER_USAGE,
    "customer_contract": CUSTOMER_CONTRACT,
    "customer_billing": CUSTOMER_BILLING,
    "customer_profile": CUSTOMER_PROFILE,
    "customer_consent": CUSTOMER_CONSENT,
    "offer_attributes": OFFER_ATTRIBUTES,
}
