"""Feast feature services: one per model version, and the usage summary's own."""

from __future__ import annotations

from feast import FeatureService
from feature_views import (
    customer_billing_fv,
    customer_contract_fv,
    customer_profile_fv,
    customer_usage_fv,
    offer_attributes_fv,
)
from on_demand import plan_fit_odfv

from features.views import CHURN_SERVICE, OWNER, RANKER_SERVICE, TEAM, USAGE_SUMMARY_SERVICE

offer_ranker_v1 = FeatureService(
    name=RANKER_SERVICE,
    features=[
        customer_usage_fv,
        customer_contract_fv,
        customer_billing_fv,
        customer_profile_fv,
        offer_attributes_fv,
        plan_fit_odfv,
    ],
    description="Inputs of the offer-ranker model, version 1: one row per (customer, offer).",
    owner=OWNER,
    tags={"team": TEAM, "model": "offer-ranker", "model_version": "1"},
)

churn_v1 = FeatureService(
    name=CHURN_SERVICE,
    features=[customer_usage_fv, customer_contract_fv, customer_billing_fv, customer_profile_fv],
    description="Inputs of the churn-risk model, version 1: one row per customer.",
    owner=OWNER,
    tags={"team": TEAM, "model": "churn-risk", "model_version": "1"},
)

usage_summary_v1 = FeatureService(
    name=USAGE_SUMMARY_SERVICE,
    features=[customer_usage_fv, customer_contract_fv, customer_billing_fv],
    description=(
        "What the invoice's usage summary needs, and all serving reads for a customer without "
        "profiling consent."
    ),
    owner=OWNER,
    tags={"team": TEAM, "consumer": "usage-summary", "model_version": "1"},
)

FEATURE_SERVICES: tuple[FeatureService, ...] = (offer_ranker_v1, churn_v1, usage_summary_v1)
