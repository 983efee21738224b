"""Point-in-time correct training frames through Feast's ``get_historical_features``.

For each entity row (``customer_id``, ``offer_id`` when the service needs offers, and
``event_timestamp``) every feature holds the newest value dated at or before that time and within
the view's ttl, never a later one; none when there is no such value. The plan-fit columns are
computed by the on-demand view's own transformation (``core.plan_fit.plan_fit``), the function
serving calls.

Feast is asked one feature view at a time, for the distinct (key, time) pairs of that view, and
the answers are joined back onto the entity rows. Asked for several views at once, Feast's file
offline store (0.67) loses rows: an entity row dated before the first value of any one view is
dropped from the whole result, and rows that share a customer and a time but differ in offer are
merged into one. Neither can happen here; every entity row comes back once, in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.columns import EVENT_TIMESTAMP
from core.settings import Settings
from features.store import PROJECT, open_store

if TYPE_CHECKING:
    from feast import FeatureStore


def _join_keys(view: Any) -> list[str]:
    return [column.name for column in view.entity_columns]


def historical_features(
    entity_df: pd.DataFrame,
    feature_service: str,
    settings: Settings | None = None,
    *,
    project: str = PROJECT,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """The entity frame with the features of ``feature_service`` joined as of each row's time.

    Every column of ``entity_df`` is kept and rows come back in the order given; timestamps are
    read as UTC when naive. A missing key column is a ``ValueError`` naming it.
    """
    store = store or open_store(settings, project)
    service = store.get_feature_service(feature_service)
    refs = [
        f"{projection.name}:{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]
    return historical_features_by_ref(store, entity_df, refs, what=feature_service)


def historical_features_by_ref(
    store: FeatureStore, entity_df: pd.DataFrame, refs: Sequence[str], what: str = "the features"
) -> pd.DataFrame:
    """Like :func:`historical_features`, for feature references ``view:feature``."""
    if entity_df.empty:
        raise ValueError("the entity frame has no rows")
    if EVENT_TIMESTAMP not in entity_df.columns:
        raise ValueError(f"the entity frame for {what} lacks column {EVENT_TIMESTAMP}")
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        view_name, _, name = ref.partition(":")
        by_view.setdefault(view_name, []).append(name)

    regular: list[tuple[str, Any, list[str]]] = []
    on_demand: list[tuple[str, Any, list[str]]] = []
    for view_name, names in by_view.items():
        try:
            regular.append((view_name, store.get_feature_view(view_name), names))
        except Exception:  # not a regular feature view: an on-demand one
            on_demand.append((view_name, store.get_on_demand_feature_view(view_name), names))

    needed = sorted({key for _, view, _ in regular for key in _join_keys(view)})
    missing = [key for key in needed if key not in entity_df.columns]
    if missing:
        raise ValueError(f"the entity frame for {what} lacks column(s) {', '.join(missing)}")

    frame = entity_df.copy()
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    for view_name, view, names in regular:
        keys = [*_join_keys(view), EVENT_TIMESTAMP]
        pairs = frame[keys].drop_duplicates().reset_index(drop=True)
        found = store.get_historical_features(
            entity_df=pairs, features=[f"{view_name}:{name}" for name in names]
        ).to_df()
        found[EVENT_TIMESTAMP] = pd.to_datetime(found[EVENT_TIMESTAMP], utc=True)
        found = found[keys + names].drop_duplicates(keys, keep="last")
        merged = frame.merge(found, on=keys, how="left", validate="many_to_one")
        merged.index = frame.index
        frame = merged
    for _, view, names in on_demand:
        transformed = view.feature_transformation.transform(frame)
        frame[names] = transformed[names].to_numpy()
    return frame
