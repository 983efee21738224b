"""Feast feature services: one per model version, and the usage summary's own."""

from __future__ import annotations

from feast import FeatureService

if __package__:
    from features.feature_views import (
        customer_billing_fv,
        customer_contract_fv,
        customer_profile_fv,
        customer_usage_fv,
        offer_attributes_fv,
    )
    from features.on_demand import plan_fit_odfv
else:  # `feast apply` inside features/ imports each file as a top-level module
    from feature_views import (  # type: ignore[no-redef]
        customer_billing_fv,
        customer_contract_fv,
        customer_profile_fv,
        customer_usage_fv,
        offer_attributes_fv,
    )
    from on_demand import plan_fit_odfv  # type: ignore[no-redef]

OWNER = "features@invoice-offers.example"

offer_ranker_v1 = FeatureService(
    name="offer_ranker_v1",
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
    tags={"team": "invoice-offers", "model": "offer-ranker", "model_version": "1"},
)

churn_v1 = FeatureService(
    name="churn_v1",
    features=[customer_usage_fv, customer_contract_fv, customer_billing_fv, customer_profile_fv],
    description="Inputs of the churn-risk model, version 1: one row per customer.",
    owner=OWNER,
    tags={"team": "invoice-offers", "model": "churn-risk", "model_version": "1"},
)

usage_summary_v1 = FeatureService(
    name="usage_summary_v1",
    features=[customer_usage_fv, customer_contract_fv, customer_billing_fv],
    description=(
        "What the invoice's usage summary needs, and all serving reads for a customer without "
        "profiling consent."
    ),
    owner=OWNER,
    tags={"team": "invoice-offers", "consumer": "usage-summary", "model_version": "1"},
)

FEATURE_SERVICES: tuple[FeatureService, ...] = (offer_ranker_v1, churn_v1, usage_summary_v1)
