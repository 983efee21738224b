"""Plan fit on demand: what a customer would have paid on a candidate offer for their own usage.

The transformation is ``core.plan_fit.plan_fit`` itself, the function serving and the usage
summary call on the values they read, so training and serving see the same numbers.
"""

from __future__ import annotations

import inspect

from feast import Field, OnDemandFeatureView
from feast.transformation.pandas_transformation import PandasTransformation
from feast.types import Float64
from feature_views import (
    customer_contract_fv,
    customer_usage_fv,
    offer_attributes_fv,
)

from core.plan_fit import (
    CONTRACT_INPUTS,
    OFFER_INPUTS,
    PLAN_FIT_OUTPUTS,
    USAGE_INPUTS,
    plan_fit,
)
from features.views import OWNER, PLAN_FIT_VIEW, TEAM

DESCRIPTION = (
    "For a customer and a candidate offer: the monthly cost on the current plan and on the offer "
    "for the usage of the last three months (fee plus overage), the saving, the overage on each, "
    "and the share of the offer's data allowance the customer would use."
)

plan_fit_odfv = OnDemandFeatureView(
    name=PLAN_FIT_VIEW,
    sources=[
        customer_usage_fv[list(USAGE_INPUTS)],
        customer_contract_fv[list(CONTRACT_INPUTS)],
        offer_attributes_fv[list(OFFER_INPUTS)],
    ],
    schema=[Field(name=name, dtype=Float64) for name in PLAN_FIT_OUTPUTS],
    # A module-level function of the installed package: stored by reference in the registry.
    feature_transformation=PandasTransformation(
        udf=plan_fit,  # type: ignore[arg-type]
        udf_string=inspect.getsource(plan_fit),
    ),
    mode="pandas",
    description=DESCRIPTION,
    owner=OWNER,
    tags={"team": TEAM, "personal_data": "true", "consent": "profiling"},
)
