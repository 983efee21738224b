"""The decision engine's feature source over feature frames, as of one moment.

The batch invoice run decides from the feature tables themselves rather than the online store. For
each customer and feature view it takes the newest row whose ``event_timestamp`` is at or before
the moment (``<=``, as Feast's materialisation up to that moment does) and hands the values over
as the online store would: Python numbers and strings, ``None`` where the value is missing (Feast
stores a NaN as null). A customer without a row in a view reads back as all ``None``, like Feast.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from features.consent_changes import apply_consent_answer
from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONSENT,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
)
from serving.decision.consent import allowed_policy
from serving.decision.inputs import ConsentState, usage_columns_as_of

CONSENT_VIEW = "customer_consent"
USAGE_VIEW = "customer_usage"
ACCOUNT_VIEWS = (USAGE_VIEW, "customer_contract", "customer_billing")
PROFILE_VIEW = "customer_profile"
# The customer views one decision may read, with their features in columns.py order.
DECISION_VIEWS: dict[str, tuple[str, ...]] = {
    CONSENT_VIEW: tuple(CUSTOMER_CONSENT),
    "customer_usage": tuple(CUSTOMER_USAGE),
    "customer_contract": tuple(CUSTOMER_CONTRACT),
    "customer_billing": tuple(CUSTOMER_BILLING),
    PROFILE_VIEW: tuple(CUSTOMER_PROFILE),
}


def start_of_day(day: dt.date) -> dt.datetime:
    """00:00 UTC on ``day``: an invoice dated ``day`` sees what was known by then."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _utc_timestamps(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    # A naive timestamp is UTC (docs/data-contract.md, types).
    return pd.to_datetime(values).dt.tz_localize("UTC")


def latest_rows(
    frame: pd.DataFrame,
    as_of: dt.datetime,
    features: Sequence[str],
    ttl: dt.timedelta | None = None,
) -> pd.DataFrame:
    """The newest row per customer with ``event_timestamp <= as_of`` (and within ``ttl``).

    A ``ttl`` of None or zero is unlimited, as in a Feast feature view. Returns ``customer_id``
    and ``features``, one row per customer, in customer order. Of two rows at the same instant
    the later one in the frame holds, as it would in the online store.
    """
    missing = [name for name in (CUSTOMER_KEY, EVENT_TIMESTAMP, *features) if name not in frame]
    if missing:
        raise KeyError(f"feature frame lacks columns {missing}")
    stamps = _utc_timestamps(frame[EVENT_TIMESTAMP])
    moment = pd.Timestamp(as_of)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    keep = (stamps <= moment).to_numpy()
    if ttl:
        keep &= (stamps >= moment - pd.Timedelta(ttl)).to_numpy()
    # The instants as a datetime array, in row order (not boxed one by one as Timestamps).
    known = frame.loc[keep, [CUSTOMER_KEY, *features]].assign(_at=stamps[keep].array)
    known = known.sort_values([CUSTOMER_KEY, "_at"], kind="stable")
    newest = known.drop_duplicates(CUSTOMER_KEY, keep="last")
    return newest.drop(columns="_at").reset_index(drop=True)


def _python_values(values: pd.Series) -> list[Any]:
    """Python scalars, ``None`` where missing: what Feast's ``to_dict()`` gives back."""
    result = values.tolist()
    for position in np.flatnonzero(values.isna().to_numpy()):
        result[position] = None
    return result


@dataclass(frozen=True)
class _ViewRows:
    """One feature view's newest values, column by column, with each customer's position."""

    features: tuple[str, ...]
    columns: tuple[list[Any], ...]
    positions: dict[str, int]

    @classmethod
    def from_latest(cls, latest: pd.DataFrame, features: Sequence[str]) -> _ViewRows:
        customers = latest[CUSTOMER_KEY].tolist()
        return cls(
            features=tuple(features),
            columns=tuple(_python_values(latest[name]) for name in features),
            positions={customer: position for position, customer in enumerate(customers)},
        )

    def read(self, customer_id: str) -> dict[str, Any] | None:
        position = self.positions.get(customer_id)
        if position is None:
            return None
        return {
            name: column[position] for name, column in zip(self.features, self.columns, strict=True)
        }

    def moved_to(self, invoice_date: dt.date) -> _ViewRows:
        """The usage view's rows moved back to the invoice's billing period all at once, column
        by column (:func:`~serving.decision.inputs.usage_columns_as_of`), as the engine moves
        each row it reads: reading a moved row, the engine finds it in the billing period
        already. Rows whose newest month is the billing period or earlier are kept as they are."""
        moved = usage_columns_as_of(
            dict(zip(self.features, self.columns, strict=True)), invoice_date
        )
        if not moved:
            return self
        columns = tuple(
            moved.get(name, column)
            for name, column in zip(self.features, self.columns, strict=True)
        )
        return _ViewRows(self.features, columns, self.positions)

    def read_or_empty(self, customer_id: str) -> dict[str, Any]:
        row = self.read(customer_id)
        return row if row is not None else dict.fromkeys(self.features)

    def __len__(self) -> int:
        return len(self.positions)


class FrameFeatureSource:
    """A ``FeatureSource`` over feature frames, point-in-time as of one moment."""

    def __init__(self, views: Mapping[str, _ViewRows], as_of: dt.datetime) -> None:
        missing = [name for name in DECISION_VIEWS if name not in views]
        if missing:
            raise KeyError(f"feature views missing: {', '.join(missing)}")
        self._views = dict(views)
        self.as_of = as_of

    @classmethod
    def from_frames(
        cls,
        frames: Mapping[str, pd.DataFrame],
        as_of: dt.datetime,
        ttl: Mapping[str, dt.timedelta | None] | None = None,
        invoice_date: dt.date | None = None,
    ) -> FrameFeatureSource:
        """From one frame per customer feature view (``customer_id``, ``event_timestamp``, …).

        ``invoice_date``: every invoice read through this source is dated then, and the usage
        rows are moved back to its billing period here, all at once, rather than one by one
        in the engine (which finds them moved; the values are the same).
        """
        views = {}
        for view, features in DECISION_VIEWS.items():
            latest = latest_rows(frames[view], as_of, features, (ttl or {}).get(view))
            views[view] = _ViewRows.from_latest(latest, features)
        if invoice_date is not None:
            views[USAGE_VIEW] = views[USAGE_VIEW].moved_to(invoice_date)
        return cls(views, as_of)

    def customers(self) -> int:
        """How many customers have consent features as of the moment."""
        return len(self._views[CONSENT_VIEW])

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        """Consent features; ``None`` for a customer not known as of the moment."""
        row = self._views[CONSENT_VIEW].read(customer_id)
        if row is None or all(value is None for value in row.values()):
            return None
        return row

    def read_account(self, customer_id: str) -> dict[str, Any]:
        """Usage, contract and billing features."""
        row: dict[str, Any] = {}
        for view in ACCOUNT_VIEWS:
            row.update(self._views[view].read_or_empty(customer_id))
        return row

    def read_profile(self, customer_id: str) -> dict[str, Any]:
        """Profile features."""
        return self._views[PROFILE_VIEW].read_or_empty(customer_id)

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Account and profile features; the engine asks only with profiling consent."""
        return self.read_account(customer_id), self.read_profile(customer_id)


# --- reading the feature tables -------------------------------------------------------------------


def read_view_frame(
    path: Path,
    features: Sequence[str],
    as_of: dt.datetime,
    customer_ids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One feature table's rows up to ``as_of``, for the given customers only (all when None).

    The filter is pushed into the Parquet scan, so a day's (or a Spark partition's) customers are
    read without loading the whole table.
    """
    dataset = ds.dataset(path, format="parquet")
    timestamp_type = dataset.schema.field(EVENT_TIMESTAMP).type
    moment = pd.Timestamp(as_of).tz_convert("UTC")
    if getattr(timestamp_type, "tz", None) is None:
        moment = moment.tz_localize(None)
    condition = ds.field(EVENT_TIMESTAMP) <= pa.scalar(moment, type=timestamp_type)
    if customer_ids is not None:
        wanted = sorted(set(customer_ids))
        key = ds.field(CUSTOMER_KEY)
        condition &= key.isin(pa.array(wanted, type=pa.string()))
        if wanted:
            # The tables are sorted by customer: a range lets the scan skip whole row groups.
            condition &= (key >= wanted[0]) & (key <= wanted[-1])
    table = dataset.to_table(columns=[CUSTOMER_KEY, EVENT_TIMESTAMP, *features], filter=condition)
    frame = table.to_pandas()
    frame[EVENT_TIMESTAMP] = _utc_timestamps(frame[EVENT_TIMESTAMP])
    return frame


def may_read_profile(consent_row: Mapping[str, Any], invoice_date: dt.date) -> bool:
    """The engine's gate for profile features: the model policy survives the consent gate.

    That is marketing consent without an objection, profiling consent, and an adult.
    """
    consent = ConsentState.from_features(consent_row, invoice_date)
    return allowed_policy("model", consent) == "model"


def profiled_customers(
    consent: pd.DataFrame, as_of: dt.datetime, invoice_date: dt.date | None = None
) -> list[str]:
    """Customers whose newest consent as of ``as_of`` allows profile features to be read for
    an invoice dated ``invoice_date`` (default: the date of ``as_of``)."""
    features = DECISION_VIEWS[CONSENT_VIEW]
    rows = _ViewRows.from_latest(latest_rows(consent, as_of, features), features)
    if invoice_date is None:
        moment = pd.Timestamp(as_of)
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        invoice_date = moment.date()
    return sorted(
        customer
        for customer in rows.positions
        if (row := rows.read(customer)) is not None and may_read_profile(row, invoice_date)
    )


def with_consent_changes(consent: pd.DataFrame, changes: pd.DataFrame | None) -> pd.DataFrame:
    """The consent view's rows with the answers received through the API on top, as ``offers
    consents sync`` writes them into the online store after a materialize: per customer named in
    ``changes`` (``consent_sync.changes_known_at``) and holding a row, one more row, the newest
    with the answers applied in order, stamped with the newest of the row and the answers.
    A customer without a row is left out, as the sync leaves them."""
    if changes is None or changes.empty or consent.empty:
        return consent
    features = list(DECISION_VIEWS[CONSENT_VIEW])
    newest = consent.sort_values([CUSTOMER_KEY, EVENT_TIMESTAMP], kind="stable").drop_duplicates(
        CUSTOMER_KEY, keep="last"
    )
    rows = {
        str(customer): row
        for customer, row in zip(
            newest[CUSTOMER_KEY],
            newest[[EVENT_TIMESTAMP, *features]].to_dict("records"),
            strict=True,
        )
    }
    added: list[dict[str, Any]] = []
    for customer, answers in changes.groupby(CUSTOMER_KEY, sort=False):
        row = rows.get(str(customer))
        if row is None:
            continue
        values = {name: row[name] for name in features}
        for answer in answers.sort_values("updated_at", kind="stable").itertuples():
            values = apply_consent_answer(
                values,
                str(answer.purpose),
                bool(answer.granted),
                granted_before=bool(answer.granted_before),
            )
        stamp = max(pd.Timestamp(row[EVENT_TIMESTAMP]), pd.Timestamp(answers["updated_at"].max()))
        added.append({CUSTOMER_KEY: str(customer), EVENT_TIMESTAMP: stamp, **values})
    if not added:
        return consent
    extra = pd.DataFrame(added, columns=list(consent.columns))
    return pd.concat([consent, extra.astype(consent.dtypes.to_dict())], ignore_index=True)


def read_decision_frames(
    paths: Mapping[str, Path],
    as_of: dt.datetime,
    customer_ids: Iterable[str] | None = None,
    invoice_date: dt.date | None = None,
    consent_changes: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """The frames of every view a decision reads, from ``paths`` (view name → Parquet path).

    Consent is read first: profile rows are loaded only for customers whose consent as of
    ``as_of`` lets a decision for an invoice dated ``invoice_date`` (default: the date of
    ``as_of``) read them, so the profile of a customer without profiling consent, with an
    objection or under 18 never leaves the table. ``consent_changes``: the answers received
    through the API to apply on top of the consent view (:func:`with_consent_changes`).
    """
    wanted = None if customer_ids is None else sorted(set(customer_ids))
    consent = read_view_frame(paths[CONSENT_VIEW], DECISION_VIEWS[CONSENT_VIEW], as_of, wanted)
    consent = with_consent_changes(consent, consent_changes)
    frames = {CONSENT_VIEW: consent}
    profiled = profiled_customers(consent, as_of, invoice_date)
    for view, features in DECISION_VIEWS.items():
        if view == CONSENT_VIEW:
            continue
        customers = profiled if view == PROFILE_VIEW else wanted
        frames[view] = read_view_frame(paths[view], features, as_of, customers)
    return frames


def decision_source(
    paths: Mapping[str, Path],
    as_of: dt.datetime,
    customer_ids: Iterable[str],
    invoice_date: dt.date,
    consent_changes: pd.DataFrame | None = None,
) -> FrameFeatureSource:
    """The feature source of one day's (or slice's) decisions: :func:`read_decision_frames`
    for these customers, held as the API's online store would hold them on ``as_of``."""
    frames = read_decision_frames(paths, as_of, customer_ids, invoice_date, consent_changes)
    return FrameFeatureSource.from_frames(frames, as_of, invoice_date=invoice_date)
