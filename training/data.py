"""Training sets: labelled entity rows, a time split without leakage, point-in-time features.

- offer-ranker: one row per shown offer (``offer_events``), label ``accepted``, features as of
  ``shown_at`` from the feature service ``offer_ranker_v1``.
- churn-risk: one row per active customer and month start, label "left within the next three
  months" (from ``contracts``), features as of the month start from ``churn_v1``.

The split is by time. Validation is the newest months; the tune set (early stopping, model choice,
calibration) the months before it; training the months before that. A row whose label is only
known after the next period has begun is dropped (purged), so nothing that happens in the
validation period (not even an outcome of an earlier offer) reaches training.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from core.columns import EVENT_TIMESTAMP
from core.contract import CONTRACTS, CUSTOMERS, OFFER_EVENTS, USAGE_MONTHLY
from core.settings import Settings, get_settings
from features.views import (
    CHURN_SERVICE,
    RANKER_SERVICE,
    SERVICE_VIEWS,
    table_path,
    view_key,
    view_ttl,
)

log = logging.getLogger(__name__)

LABEL = "label"
PERIOD = "period"
Period = Literal["train", "tune", "validation", "purged"]
TRAIN: Final = "train"
TUNE: Final = "tune"
VALIDATION: Final = "validation"
PURGED: Final = "purged"

CHURN_HORIZON_MONTHS = 3
# An offer's outcome counts when it comes within this many days of the invoice (customers answer
# within ten days in the simulated world); a later answer is not an acceptance of this offer.
RANKER_LABEL_DAYS = 14
# Extra columns read beside each model's inputs, for slices and the consent groups.
SLICE_VIEWS = ("customer_consent",)


@dataclass(frozen=True)
class TimeSplit:
    """Period boundaries (UTC, start inclusive) and how long after its time a row's label is known.

    The tune set belongs to the training period: it only has to end before validation does.
    """

    train_start: pd.Timestamp
    tune_start: pd.Timestamp
    validation_start: pd.Timestamp
    validation_end: pd.Timestamp
    label_horizon: pd.DateOffset | pd.Timedelta

    def assign(self, times: pd.Series) -> pd.Series:
        """The period of each row by its time; rows whose label is known only after validation
        has begun are purged."""
        label_known = times + self.label_horizon
        before_validation = (times < self.validation_start) & (label_known <= self.validation_start)
        period = np.select(
            [
                (times >= self.validation_start) & (times < self.validation_end),
                before_validation & (times >= self.tune_start),
                before_validation & (times >= self.train_start),
            ],
            [VALIDATION, TUNE, TRAIN],
            default=PURGED,
        )
        return pd.Series(period, index=times.index, name=PERIOD)

    def window(self) -> dict[str, str]:
        """The windows as tags: where training data starts and ends, and what was validated on."""
        return {
            "train_window": f"{self.train_start.date()}..{self.validation_start.date()}",
            "tune_window": f"{self.tune_start.date()}..{self.validation_start.date()}",
            "validation_window": f"{self.validation_start.date()}..{self.validation_end.date()}",
            "label_horizon": str(self.label_horizon),
        }


def _month_start(times: pd.Series) -> pd.Series:
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.dt.to_period("M").dt.to_timestamp().dt.tz_localize("UTC")


def month_split(
    times: pd.Series,
    label_horizon: pd.DateOffset | pd.Timedelta,
    validation_months: int = 2,
    tune_months: int = 1,
    last_month: pd.Timestamp | None = None,
) -> TimeSplit:
    """Validation = the newest ``validation_months`` calendar months (up to ``last_month``);
    tune = the ``tune_months`` before the last moment whose labels are known before validation;
    training = everything older."""
    if validation_months < 1 or tune_months < 1:
        raise ValueError("validation_months and tune_months must be at least 1")
    months = _month_start(times)
    newest = last_month if last_month is not None else months.max()
    validation_start = newest - pd.DateOffset(months=validation_months - 1)
    validation_end = newest + pd.DateOffset(months=1)
    tune_end = validation_start - label_horizon
    tune_start = tune_end - pd.DateOffset(months=tune_months)
    train_start = months.min()
    if tune_start <= train_start:
        raise ValueError(
            f"too few months for a time split: rows from {train_start.date()} to "
            f"{validation_end.date()}, with {validation_months} validation and {tune_months} "
            f"tune months and labels known {label_horizon} later, nothing is left to train on"
        )
    return TimeSplit(train_start, tune_start, validation_start, validation_end, label_horizon)


# ----------------------------------------------------------------------------- labelled rows


def ranker_rows(offer_events: pd.DataFrame, label_days: int = RANKER_LABEL_DAYS) -> pd.DataFrame:
    """One row per shown offer: entity keys, time, label (accepted) and the logging facts."""
    frame = offer_events[
        ["decision_id", "customer_id", "offer_id", "shown_at", "rank", "policy", "propensity"]
    ].copy()
    outcome_at = offer_events["outcome_at"]
    in_time = outcome_at.isna() | (
        outcome_at <= offer_events["shown_at"] + pd.Timedelta(days=label_days)
    )
    frame[LABEL] = ((offer_events["outcome"] == "accepted") & in_time).astype(np.int8)
    frame[EVENT_TIMESTAMP] = frame.pop("shown_at")
    # Rows of one decision together and in rank order: LightGBM's query groups need it.
    codes, _ = pd.factorize(frame["decision_id"])
    order = np.lexsort((frame["rank"].to_numpy(), codes))
    return frame.iloc[order].reset_index(drop=True)


def customer_exits(contracts: pd.DataFrame) -> pd.Series:
    """The day each customer who left had their last contract end (customers who stay: absent).

    A customer has left when none of their contracts is open (``valid_to`` null) and no contract
    starts after the last one ends.
    """
    grouped = contracts.groupby("customer_id")
    has_open = contracts["valid_to"].isna().groupby(contracts["customer_id"]).any()
    last_end = grouped["valid_to"].max()
    last_start = grouped["valid_from"].max()
    left = ~has_open & (last_end >= last_start)
    return last_end[left]


def churn_rows(
    customers: pd.DataFrame,
    contracts: pd.DataFrame,
    months: Sequence[pd.Timestamp],
    horizon_months: int = CHURN_HORIZON_MONTHS,
) -> pd.DataFrame:
    """One row per customer with a contract on each month start, label = leaves within the horizon.

    ``months`` are month starts (UTC). The caller keeps only months whose horizon ends inside the
    data; this function labels every row it is given.
    """
    starts = contracts.groupby("customer_id")["valid_from"].min()
    exits = customer_exits(contracts)
    base = pd.DataFrame({"customer_id": customers["customer_id"].to_numpy()})
    base["first_day"] = base["customer_id"].map(starts)
    base["exit_day"] = base["customer_id"].map(exits)
    base = base[base["first_day"].notna()]
    parts = []
    for month in months:
        day = month.tz_convert("UTC").tz_localize(None)
        horizon_end = day + pd.DateOffset(months=horizon_months)
        active = (base["first_day"] <= day) & (base["exit_day"].isna() | (base["exit_day"] >= day))
        rows = base.loc[active, ["customer_id", "exit_day"]]
        label = rows["exit_day"].notna() & (rows["exit_day"] < horizon_end)
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": rows["customer_id"].to_numpy(),
                    EVENT_TIMESTAMP: month,
                    LABEL: label.to_numpy(dtype=np.int8),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["customer_id", EVENT_TIMESTAMP, LABEL])
    return pd.concat(parts, ignore_index=True)


def sample_groups(
    frame: pd.DataFrame, group_column: str, max_rows: int | None, seed: int
) -> pd.DataFrame:
    """Whole groups (decisions or customers) at random until about ``max_rows`` rows.

    Sampling whole groups keeps both the label rate (so probabilities stay calibrated) and the
    decision structure LambdaRank needs; the order of rows is kept.
    """
    if max_rows is None or len(frame) <= max_rows:
        return frame
    codes, uniques = pd.factorize(frame[group_column])
    share = max_rows / len(frame)
    rng = np.random.default_rng(seed)
    keep_group = rng.random(len(uniques)) < share
    return frame[keep_group[codes]]


def fingerprint(paths: Sequence[Path], extra: str = "") -> str:
    """A short content hash of input files (and any extra text, e.g. the training settings)."""
    digest = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class TrainingSet:
    """Labelled rows with features and periods for one model."""

    name: str
    frame: pd.DataFrame
    split: TimeSplit
    feature_service: str
    group_column: str
    timings: dict[str, float] = field(default_factory=dict)

    def period(self, which: Period) -> pd.DataFrame:
        return self.frame[self.frame[PERIOD] == which]

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame[PERIOD].value_counts().items()}


def _read(data_dir: Path, table: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    from core.tables import read_table

    frame = read_table(data_dir, table)
    return frame if columns is None else frame[list(columns)]


def load_ranker_rows(data_dir: Path) -> pd.DataFrame:
    return ranker_rows(_read(data_dir, OFFER_EVENTS))


def load_churn_rows(data_dir: Path) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Customer-month rows whose three-month label lies inside the data, and the newest month."""
    customers = _read(data_dir, CUSTOMERS, ["customer_id"])
    contracts = _read(data_dir, CONTRACTS, ["customer_id", "valid_from", "valid_to"])
    usage = _read(data_dir, USAGE_MONTHLY, ["month"])
    first = pd.Timestamp(usage["month"].min()).tz_localize("UTC")
    end = pd.Timestamp(usage["month"].max()).tz_localize("UTC") + pd.DateOffset(months=1)
    # The newest month whose three months ahead are all inside the data.
    newest = end - pd.DateOffset(months=CHURN_HORIZON_MONTHS)
    # A row needs at least one complete month of usage behind it.
    months = list(pd.date_range(first + pd.DateOffset(months=1), newest, freq="MS"))
    return churn_rows(customers, contracts, months), newest


def timed(timings: dict[str, float], name: str) -> Any:
    """Context manager adding the elapsed seconds of a block to ``timings[name]``."""

    class _Timer:
        def __enter__(self) -> None:
            self.start = time.perf_counter()

        def __exit__(self, *args: object) -> None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.start
            log.info("%s took %.1f s", name, timings[name])

    return _Timer()


# ----------------------------------------------------------------------------- features

_KEEP_STRINGS = frozenset({"segment", "current_plan_id", "binding_end_date"})


def feature_table_path(settings: Settings, view: str) -> Path:
    """Where ``features build`` writes a view's table (Parquet, one file or a folder of parts)."""
    return table_path(view, settings.features_dir)


def _view_ttl(view: str) -> pd.Timedelta | None:
    """The view's TTL (None = unlimited), so the pandas join drops what Feast drops."""
    ttl = view_ttl(view)
    return None if ttl is None else pd.Timedelta(ttl)


def _utc_instants(times: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC ``datetime64[ns]`` (fast to sort and compare; naive = UTC)."""
    values = pd.to_datetime(times, utc=True)
    return values.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _arrow_instants(column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        column = pc.assume_timezone(column, "UTC")
    stamps = pc.cast(column, pa.timestamp("ns", tz="UTC"))
    return np.asarray(stamps.to_numpy(zero_copy_only=False)).astype("datetime64[ns]")


def _latest_rows(
    left_codes: np.ndarray,
    left_times: np.ndarray,
    right_codes: np.ndarray,
    right_times: np.ndarray,
) -> np.ndarray:
    """For each left row, the right row with the same code and the newest time at or before the
    left row's time; -1 when there is none. Codes below zero never match."""
    valid = right_codes >= 0
    positions = np.flatnonzero(valid)
    times = right_times[valid].view(np.int64)
    codes = right_codes[valid].astype(np.int64)
    ranks = np.unique(times)
    span = len(ranks) + 1
    # One sortable number per (code, time): a binary search finds the newest time not after t.
    composite = codes * span + np.searchsorted(ranks, times)
    order = np.argsort(composite, kind="stable")
    composite = composite[order]
    wanted = left_codes.astype(np.int64) * span + np.searchsorted(
        ranks, left_times.view(np.int64), side="right"
    )
    # The last entry strictly below (code, first rank after t): the newest time not after t.
    found = np.searchsorted(composite, wanted, side="left") - 1
    inside = found >= 0
    same_code = np.zeros(len(left_codes), dtype=bool)
    same_code[inside] = composite[found[inside]] // span == left_codes[inside]
    same_code &= left_codes >= 0
    return np.where(same_code, positions[order[np.clip(found, 0, None)]], -1)


def point_in_time_join(
    entities: pd.DataFrame,
    tables: Mapping[str, Any],
    ttls: Mapping[str, pd.Timedelta | None] | None = None,
) -> pd.DataFrame:
    """Feast's point-in-time semantics: for each entity row and view, the newest feature row
    with ``event_timestamp`` at or before the row's, and not older than the view's TTL; no such
    row gives missing values. Numeric features come back as float32 (NaN = missing).

    ``tables`` holds pandas frames or Arrow tables (key, ``event_timestamp``, features), or
    functions that read one: each is then read only when its turn comes and let go after it, so
    only one feature table is in memory at a time.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    result = entities.reset_index(drop=True)
    left_times = _utc_instants(result[EVENT_TIMESTAMP])
    added: dict[str, Any] = {}
    for view, source in tables.items():
        loaded = source() if callable(source) else source
        table = (
            loaded
            if isinstance(loaded, pa.Table)
            else pa.Table.from_pandas(loaded, preserve_index=False)
        )
        del loaded
        key = view_key(view)
        keys = pa.array(result[key].astype(str).to_numpy(dtype=object), type=pa.string())
        value_set = pc.unique(keys)
        left_codes = pc.fill_null(pc.index_in(keys, value_set=value_set), -1).to_numpy()
        right_keys = table.column(key)
        if pa.types.is_dictionary(right_keys.type):
            right_keys = pc.cast(right_keys, pa.string())
        right_codes = pc.fill_null(pc.index_in(right_keys, value_set=value_set), -1).to_numpy()
        right_times = _arrow_instants(table.column(EVENT_TIMESTAMP))
        rows = _latest_rows(left_codes, left_times, np.asarray(right_codes), right_times)
        ttl = (ttls or {}).get(view)
        if ttl is not None:
            matched = rows >= 0
            age = np.zeros(len(rows), dtype="timedelta64[ns]")
            age[matched] = left_times[matched] - right_times[rows[matched]]
            rows = np.where(matched & (age > ttl.to_timedelta64()), -1, rows)
        take = pa.array(np.clip(rows, 0, None), mask=rows < 0)
        for name in table.column_names:
            if name in (key, EVENT_TIMESTAMP) or name in result.columns or name in added:
                continue
            column = table.column(name)
            if name in _KEEP_STRINGS:
                added[name] = column.take(take).to_pandas().to_numpy(dtype=object)
            elif (
                pa.types.is_integer(column.type)
                or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)
            ):
                values = pc.cast(column.take(take), pa.float32())
                added[name] = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
        del table
    return pd.concat([result, pd.DataFrame(added, index=result.index)], axis=1)


def read_feature_table(settings: Settings, view: str) -> Any:
    """One built feature table as an Arrow table, without string columns no model input needs."""
    import pyarrow.parquet as pq

    path = feature_table_path(settings, view)
    if not path.exists():
        raise FileNotFoundError(f"feature table {path} not found; run `offers features build`")
    key = view_key(view)
    columns = [
        field.name
        for field in pq.read_schema(path)
        if field.name in (key, EVENT_TIMESTAMP)
        or field.name in _KEEP_STRINGS
        or not (
            str(field.type) in ("string", "large_string")
            or str(field.type).startswith("dictionary")
        )
    ]
    return pq.read_table(path, columns=columns)


def read_feature_tables(settings: Settings, views: Sequence[str]) -> dict[str, Any]:
    """Readers of the built feature tables, one per view, for :func:`point_in_time_join`."""
    for view in views:
        if not feature_table_path(settings, view).exists():
            path = feature_table_path(settings, view)
            raise FileNotFoundError(f"feature table {path} not found; run `offers features build`")
    return {view: partial(read_feature_table, settings, view) for view in views}


def add_plan_fit(frame: pd.DataFrame) -> pd.DataFrame:
    """The plan-fit columns (the on-demand view's outputs) from the joined features."""
    from core.plan_fit import PLAN_FIT_INPUTS, plan_fit

    inputs = frame[list(PLAN_FIT_INPUTS)].astype(float)
    fit = plan_fit(inputs)
    for name in fit.columns:
        frame[name] = fit[name].to_numpy(dtype=np.float32)
    return frame


def join_features(
    entities: pd.DataFrame,
    feature_service: str,
    settings: Settings,
    method: str = "tables",
) -> pd.DataFrame:
    """Entity rows with their point-in-time features, the consent view and plan fit.

    ``method`` "tables" joins the built feature tables with pandas; "feast" asks Feast's offline
    store (``features.training_frame.historical_features``). Both follow Feast's semantics.
    """
    views = SERVICE_VIEWS[feature_service]
    if method == "feast":
        from features.training_frame import historical_features

        joined = historical_features(entities, feature_service, settings).reset_index(drop=True)
        consent = point_in_time_join(
            entities.reset_index(drop=True),
            read_feature_tables(settings, SLICE_VIEWS),
            {view: _view_ttl(view) for view in SLICE_VIEWS},
        )
        for name in consent.columns.difference(joined.columns):
            joined[name] = consent[name].to_numpy()
    elif method == "tables":
        all_views = (*views, *SLICE_VIEWS)
        joined = point_in_time_join(
            entities,
            read_feature_tables(settings, all_views),
            {view: _view_ttl(view) for view in all_views},
        )
    else:
        raise ValueError(f"unknown join method {method!r}: 'tables' or 'feast'")
    if "offer_attributes" in views and "fit_saving_sek_per_month" not in joined:
        joined = add_plan_fit(joined)
    return joined


def _sample_training_period(
    rows: pd.DataFrame, group: str, max_train_rows: int | None, seed: int
) -> pd.DataFrame:
    """Keep tune and validation rows whole; sample whole groups of the training period."""
    train = rows[PERIOD].to_numpy() == TRAIN
    sampled = sample_groups(rows[train], group, max_train_rows, seed)
    keep = ~train
    keep[sampled.index.to_numpy()] = True
    return rows[keep].reset_index(drop=True)


def _training_set(
    name: str,
    rows: pd.DataFrame,
    split: TimeSplit,
    group: str,
    service: str,
    settings: Settings,
    method: str,
    timings: dict[str, float],
    step: str,
    max_train_rows: int | None,
    seed: int,
) -> TrainingSet:
    """Label rows split by time (purged rows dropped, the training period sampled by ``group``),
    joined with their features as of each row's timestamp."""
    with timed(timings, f"{step}_labels"):
        rows[PERIOD] = split.assign(rows[EVENT_TIMESTAMP]).to_numpy()
        rows = rows[rows[PERIOD] != PURGED].reset_index(drop=True)
        rows = _sample_training_period(rows, group, max_train_rows, seed)
    with timed(timings, f"{step}_join"):
        frame = join_features(rows, service, settings, method)
    return TrainingSet(name, frame, split, service, group, timings)


def ranker_training_set(
    data_dir: Path,
    settings: Settings | None = None,
    validation_months: int = 2,
    tune_months: int = 1,
    method: str = "tables",
    timings: dict[str, float] | None = None,
    max_train_rows: int | None = None,
    seed: int = 7,
) -> TrainingSet:
    """Shown offers with features as of ``shown_at``, split by time.

    At most about ``max_train_rows`` training rows (whole decisions) are kept, before the join.
    """
    resolved = settings or get_settings()
    timings = timings if timings is not None else {}
    with timed(timings, "ranker_labels"):
        rows = load_ranker_rows(data_dir)
        split = month_split(
            rows[EVENT_TIMESTAMP],
            pd.Timedelta(days=RANKER_LABEL_DAYS),
            validation_months=validation_months,
            tune_months=tune_months,
        )
    return _training_set(
        "offer-ranker",
        rows,
        split,
        "decision_id",
        RANKER_SERVICE,
        resolved,
        method,
        timings,
        "ranker",
        max_train_rows,
        seed,
    )


def churn_training_set(
    data_dir: Path,
    settings: Settings | None = None,
    validation_months: int = 2,
    tune_months: int = 1,
    method: str = "tables",
    timings: dict[str, float] | None = None,
    max_train_rows: int | None = None,
    seed: int = 7,
) -> TrainingSet:
    """Customer-months with features as of the month start, split by time.

    At most about ``max_train_rows`` training rows (whole customers) are kept, before the join.
    """
    resolved = settings or get_settings()
    timings = timings if timings is not None else {}
    with timed(timings, "churn_labels"):
        rows, newest = load_churn_rows(data_dir)
        split = month_split(
            rows[EVENT_TIMESTAMP],
            pd.DateOffset(months=CHURN_HORIZON_MONTHS),
            validation_months=validation_months,
            tune_months=tune_months,
            last_month=newest,
        )
    return _training_set(
        "churn-risk",
        rows,
        split,
        "customer_id",
        CHURN_SERVICE,
        resolved,
        method,
        timings,
        "churn",
        max_train_rows,
        seed,
    )


OFFER_LEVEL_COLUMNS = frozenset(
    {"offer_id", "rank", "propensity", "policy", LABEL, "offer_new_customer_discount_sek"}
)
CANDIDATE_SET = (
    "every catalog offer valid on the decision date for the customer's segment, other than the "
    "current plan, whose minimum tenure the customer meets"
)


def candidate_rows(
    shown: pd.DataFrame, catalog: Any, max_decisions: int | None = None, seed: int = 7
) -> pd.DataFrame:
    """Every offer a policy could have put first in each decision of ``shown``, with features.

    Customer features are taken from the decision's shown rows (they are the same for every offer
    of a decision); offer attributes come from the catalog and plan fit is recomputed, exactly as
    the on-demand view does. The set is described by :data:`CANDIDATE_SET`; the finer eligibility
    rules of the decision engine are not applied here.
    """
    from core.plan_fit import PLAN_FIT_OUTPUTS
    from features.transforms import offer_features
    from features.views import OFFER_ATTRIBUTES

    offer_level = OFFER_LEVEL_COLUMNS | set(OFFER_ATTRIBUTES) | set(PLAN_FIT_OUTPUTS)
    decisions = shown.drop_duplicates("decision_id")
    decisions = sample_groups(decisions, "decision_id", max_decisions, seed)
    customer = decisions[[c for c in decisions.columns if c not in offer_level]]
    offers = offer_features(catalog).drop(columns=[EVENT_TIMESTAMP])
    by_id = catalog.by_id()
    offers["valid_from"] = pd.to_datetime(
        [by_id[o].valid_from for o in offers["offer_id"]], utc=True
    )
    offers["valid_to"] = pd.to_datetime(
        [by_id[o].valid_to or pd.Timestamp.max.date() for o in offers["offer_id"]], utc=True
    )
    offers["for_consumer"] = ["consumer" in by_id[o].segments for o in offers["offer_id"]]
    offers["for_business"] = ["business" in by_id[o].segments for o in offers["offer_id"]]
    pairs = customer.merge(offers, how="cross")
    day = pairs[EVENT_TIMESTAMP].dt.normalize()
    business = pairs["segment"].astype(str).eq("business") if "segment" in pairs else False
    keep = (
        (pairs["valid_from"] <= day)
        & (day <= pairs["valid_to"])
        & np.where(business, pairs["for_business"], pairs["for_consumer"])
        & (pairs["offer_id"] != pairs.get("current_plan_id", ""))
        & (pairs["tenure_months"].fillna(0) >= pairs["offer_min_tenure_months"])
    )
    pairs = pairs[keep].drop(columns=["valid_from", "valid_to", "for_consumer", "for_business"])
    pairs = pairs.sort_values(["decision_id", "offer_id"], kind="stable").reset_index(drop=True)
    for name in OFFER_ATTRIBUTES:
        pairs[name] = pairs[name].astype(np.float32)
    return add_plan_fit(pairs)
