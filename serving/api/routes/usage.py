"""Usage summaries: what a customer used and paid for, for the invoice (role renderer)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from serving.api.deps import CatalogDep, FeaturesDep, RendererRole, ServicesDep
from serving.api.errors import ProblemError, invoice_date_out_of_range, problem_responses
from serving.api.schemas import INVOICE_DATE_DESCRIPTION, IsoDate, Locale
from serving.decision.engine import summarise_usage
from serving.decision.inputs import UnknownCustomerError
from serving.feature_reader import FeatureStoreUnavailable
from serving.fields import ID_PATTERN
from serving.offers_response import UsageSummary

router = APIRouter(prefix="/v1", tags=["usage"])


# The first invoice date whose billing period (the calendar month before it) has a date.
FIRST_INVOICE_DATE = dt.date(1, 2, 1)


@router.get(
    "/customers/{customer_id}/usage-summary",
    response_model=UsageSummary,
    responses=problem_responses(401, 403, 404, 422, 503),
)
def usage_summary(
    customer_id: Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)],
    source: FeaturesDep,
    services: ServicesDep,
    catalog: CatalogDep,
    _: RendererRole,
    invoice_date: Annotated[
        IsoDate | None,
        Query(description=INVOICE_DATE_DESCRIPTION),
    ] = None,
    locale: Annotated[Locale, Query()] = "sv",
) -> UsageSummary:
    """The usage summary alone; `detailed` (trends, plan fit) only with usage_insights consent."""
    if invoice_date is not None and invoice_date < FIRST_INVOICE_DATE:
        # Its billing period, the month before, would begin before year 1: no date to name.
        message = f"invoice_date {invoice_date.isoformat()} has no billing period before it"
        raise ProblemError(
            422,
            message,
            kind="validation",
            errors=[{"loc": ["query", "invoice_date"], "msg": message, "type": "value_error"}],
        )
    today = dt.datetime.now(dt.UTC).date()
    ahead = services.offers.invoice_date_problem(invoice_date or today, today, bound_past=False)
    if ahead is not None:
        # No month after the newest one ended is known; the offers route refuses the same date.
        raise invoice_date_out_of_range(ahead, "query")
    if source is None:
        # A store that was down at start (or since) is reopened by the first request after it.
        source = services.current_features()
    try:
        if source is None:
            raise FeatureStoreUnavailable("not_open")
        summary = summarise_usage(
            customer_id,
            source,
            catalog,
            invoice_date=invoice_date or today,
            locale=locale,
        )
    except UnknownCustomerError as error:
        raise ProblemError(
            404, f"customer {customer_id} is not known", kind="unknown-customer"
        ) from error
    except FeatureStoreUnavailable as error:
        raise ProblemError(
            503,
            "the feature store is unavailable; try again shortly",
            kind="feature-store-unavailable",
            headers={"Retry-After": "1"},
        ) from error
    return UsageSummary.model_validate(summary)
