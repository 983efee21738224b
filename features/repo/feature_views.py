"""Feast feature views, one per feature table, built from ``features.views``.

``ttl`` bounds how far back a point-in-time join looks: 400 days for monthly snapshots; consent
and offer attributes hold until they change, which Feast writes as a TTL of 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from data_sources import (
    customer_billing_source,
    customer_consent_source,
    customer_contract_source,
    customer_profile_source,
    customer_usage_source,
    offer_attributes_source,
)
from entities import customer, offer
from feast import Entity, FeatureView, Field
from feast.data_source import DataSource
from feast.types import FeastType, Float64, Int64, String

from features.views import OWNER, REVISION_TAG, TEAM, VIEWS, FeatureType

FEAST_TYPES: dict[FeatureType, FeastType] = {"float": Float64, "int": Int64, "str": String}


def fields(schema: Mapping[str, FeatureType]) -> list[Field]:
    """Feast fields for a feature schema of ``features.views``."""
    return [Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in schema.items()]


def _view(name: str, entity: Entity, source: DataSource) -> FeatureView:
    spec = VIEWS[name]
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=spec.ttl or timedelta(0),
        schema=fields(spec.features),
        source=source,
        online=True,
        description=spec.description,
        owner=OWNER,
        tags={"team": TEAM, **spec.tags, REVISION_TAG: str(spec.revision)},
    )


customer_usage_fv = _view("customer_usage", customer, customer_usage_source)
customer_contract_fv = _view("customer_contract", customer, customer_contract_source)
customer_billing_fv = _view("customer_billing", customer, customer_billing_source)
customer_profile_fv = _view("customer_profile", customer, customer_profile_source)
customer_consent_fv = _view("customer_consent", customer, customer_consent_source)
offer_attributes_fv = _view("offer_attributes", offer, offer_attributes_source)

CUSTOMER_VIEWS: tuple[FeatureView, ...] = (
    customer_usage_fv,
    customer_contract_fv,
    customer_billing_fv,
    customer_profile_fv,
    customer_consent_fv,
)
FEATURE_VIEWS: tuple[FeatureView, ...] = (*CUSTOMER_VIEWS, offer_attributes_fv)
