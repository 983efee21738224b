"""Feast feature views, one per feature table; the feature names come from ``features.columns``.

``ttl`` bounds how far back a point-in-time join looks. Monthly snapshots use 400 days; consent
and offer attributes hold until they change, so theirs is unlimited (0).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from feast import Entity, FeatureView, Field
from feast.data_source import DataSource
from feast.types import FeastType, Float64, Int64, String

from features.columns import (
    CUSTOMER_BILLING,
    CUSTOMER_CONSENT,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
    OFFER_ATTRIBUTES,
    FeatureType,
)

if __package__:
    from features.data_sources import (
        customer_billing_source,
        customer_consent_source,
        customer_contract_source,
        customer_profile_source,
        customer_usage_source,
        offer_attributes_source,
    )
    from features.entities import customer, offer
else:  # `feast apply` inside features/ imports each file as a top-level module
    from data_sources import (  # type: ignore[no-redef]
        customer_billing_source,
        customer_consent_source,
        customer_contract_source,
        customer_profile_source,
        customer_usage_source,
        offer_attributes_source,
    )
    from entities import customer, offer  # type: ignore[no-redef]

OWNER = "features@invoice-offers.example"
SNAPSHOT_TTL = timedelta(days=400)
UNLIMITED_TTL = timedelta(0)
FEAST_TYPES: dict[FeatureType, FeastType] = {"float": Float64, "int": Int64, "str": String}


def fields(schema: Mapping[str, FeatureType]) -> list[Field]:
    """Feast fields for a feature schema of ``features.columns``."""
    return [Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in schema.items()]


def _view(
    name: str,
    entity: Entity,
    source: DataSource,
    schema: Mapping[str, FeatureType],
    ttl: timedelta,
    description: str,
    **tags: str,
) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=ttl,
        schema=fields(schema),
        source=source,
        online=True,
        description=description,
        owner=OWNER,
        tags={"team": "invoice-offers", **tags},
    )


customer_usage_fv = _view(
    "customer_usage",
    customer,
    customer_usage_source,
    CUSTOMER_USAGE,
    SNAPSHOT_TTL,
    "Usage of the last six complete months (m1 newest): data, voice, SMS, roaming, overage; "
    "3- and 6-month means and maxima, trends, months over the allowance.",
    personal_data="true",
    consent="none: the customer's own usage, shown on the invoice",
)
customer_contract_fv = _view(
    "customer_contract",
    customer,
    customer_contract_source,
    CUSTOMER_CONTRACT,
    SNAPSHOT_TTL,
    "The contract in force: plan, fee, allowances (NaN = unlimited), tenure, binding end, "
    "plan changes in 24 months.",
    personal_data="true",
    consent="none: contractual",
)
customer_billing_fv = _view(
    "customer_billing",
    customer,
    customer_billing_source,
    CUSTOMER_BILLING,
    SNAPSHOT_TTL,
    "Invoice amounts and trend, invoice and reminder fees in 12 months, late payments, unpaid "
    "reminders, collection and days past due, as known on each invoice date.",
    personal_data="true",
    consent="none: contractual",
)
customer_profile_fv = _view(
    "customer_profile",
    customer,
    customer_profile_source,
    CUSTOMER_PROFILE,
    SNAPSHOT_TTL,
    "Age, region, the survey's satisfaction answer and how earlier offers were met.",
    personal_data="true",
    consent="profiling",
)
customer_consent_fv = _view(
    "customer_consent",
    customer,
    customer_consent_source,
    CUSTOMER_CONSENT,
    UNLIMITED_TTL,
    "Consent per purpose (marketing, profiling, usage_insights) and marketing objections, from "
    "the exact time each change was recorded; birth year and segment for the consent gate.",
    personal_data="true",
    consent="read first: decides what else may be read",
)
offer_attributes_fv = _view(
    "offer_attributes",
    offer,
    offer_attributes_source,
    OFFER_ATTRIBUTES,
    UNLIMITED_TTL,
    "Catalog attributes of each offer: kind, fees, allowances (NaN = unlimited), binding, "
    "minimum tenure.",
    personal_data="false",
)

CUSTOMER_VIEWS: tuple[FeatureView, ...] = (
    customer_usage_fv,
    customer_contract_fv,
    customer_billing_fv,
    customer_profile_fv,
    customer_consent_fv,
)
FEATURE_VIEWS: tuple[FeatureView, ...] = (*CUSTOMER_VIEWS, offer_attributes_fv)
