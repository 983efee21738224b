"""Feature tables from the input tables: pure DataFrame → DataFrame, one module per feature view.

Each output row is a snapshot of one entity at ``event_timestamp``, the moment its values became
known, so a point-in-time join never sees a value before it was true. Every frame has the key
column, ``event_timestamp`` (UTC) and exactly the features of :mod:`features.views`, in that order
and with those types. When each view's rows are dated is told in its module:
:mod:`~features.transforms.customer_usage`, :mod:`~features.transforms.customer_contract`,
:mod:`~features.transforms.customer_billing`, :mod:`~features.transforms.customer_profile`,
:mod:`~features.transforms.customer_consent` and :mod:`~features.transforms.offer_attributes`.
Monthly snapshots run over the span of :mod:`~features.transforms.span`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from core.catalog import Catalog
from features.transforms.customer_billing import billing_features
from features.transforms.customer_consent import consent_features
from features.transforms.customer_contract import contract_features
from features.transforms.customer_profile import profile_features
from features.transforms.customer_usage import usage_features
from features.transforms.offer_attributes import offer_features
from features.transforms.span import data_end, data_start

__all__ = [
    "FEATURE_TABLES",
    "TableBuilder",
    "billing_features",
    "build_feature_tables",
    "consent_features",
    "contract_features",
    "data_end",
    "data_start",
    "offer_features",
    "profile_features",
    "usage_features",
]

# Each feature table: the input tables it reads, and how it is built from them.
TableBuilder = Callable[
    [Mapping[str, pd.DataFrame], Catalog, "pd.Timestamp | None", pd.Timestamp], pd.DataFrame
]
FEATURE_TABLES: dict[str, tuple[tuple[str, ...], TableBuilder]] = {
    "customer_usage": (
        ("usage_monthly", "contracts"),
        lambda t, c, s, e: usage_features(t["usage_monthly"], t["contracts"]),
    ),
    "customer_billing": (("invoices",), lambda t, c, s, e: billing_features(t["invoices"])),
    "customer_contract": (
        ("contracts", "customers"),
        lambda t, c, s, e: contract_features(t["contracts"], t["customers"], c, e, s),
    ),
    "customer_profile": (
        ("customers", "offer_events"),
        lambda t, c, s, e: profile_features(t["customers"], t["offer_events"], e, s),
    ),
    "customer_consent": (
        ("customers", "consents"),
        lambda t, c, s, e: consent_features(t["customers"], t["consents"]),
    ),
    "offer_attributes": ((), lambda t, c, s, e: offer_features(c)),
}


def build_feature_tables(
    tables: Mapping[str, pd.DataFrame], catalog: Catalog
) -> dict[str, pd.DataFrame]:
    """Every feature table by feature view name, from the input tables and the catalog."""
    start, end = data_start(tables), data_end(tables)
    return {view: build(tables, catalog, start, end) for view, (_, build) in FEATURE_TABLES.items()}
