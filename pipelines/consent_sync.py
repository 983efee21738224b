"""``offers consents sync``: the consent changes received through the API, applied to the online
store again, and consent files recorded in bulk.

A materialize reloads the consent view whole from the ``consents`` table, which holds none of the
changes received through ``POST /v1/consents``: each reload undoes them online. The sync puts them
back: every stored change that is the newest stored one for its customer and purpose, and newer
than the newest answer the ``consents`` table holds for them, is applied on top of the customer's
online consent row (``features.consent_changes``, the rules the API applies), many rows per write.
A change the table has overtaken is left alone: the reload already brought the newer answer.
``offers features materialize`` and the retrain's materialize step run it right after loading.

With ``--file`` the sync first records a file of consent answers (the ``consents`` table's
columns) as changes, each under an id derived from the answer, so a file loaded twice is stored
once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from core.columns import CUSTOMER_KEY
from core.contract import CONSENT_PURPOSES, CONSENTS
from core.database import is_sqlite_file
from core.settings import Settings
from core.tables import read_table
from features.consent_changes import ConsentAnswer, answer_change_id, apply_consent_answer
from features.consent_rows import ConsentRowWrite, OnlineConsentRows
from features.store import PROJECT
from serving.decision_log import DecisionLog
from serving.decision_log.consents import (
    mark_consent_changes_applied,
    record_consent_changes,
    stored_consent_changes,
)
from serving.decision_log.records import ConsentChangeRecord

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

CUSTOMERS_PER_BATCH = 5_000
MAX_ID_LENGTH = 64  # the decision log's column, and the API's identifier rule
# PostgreSQL text cannot hold NUL (the driver refuses the whole statement), and no control
# character belongs in an id; the API refuses them too.
ID_CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
EXAMPLES = 5
# How a stored change is ordered among a customer's answers for one purpose (the last one holds):
# ConsentChangeRecord.order, as the API orders them.
CHANGE_ORDER = ["updated_at", "received_at", "change_id"]


@dataclass(frozen=True)
class ConsentSyncReport:
    """What a sync did: the file's rows recorded, the customers' online rows updated, the changes
    the consents table overtook, and the customers the online store does not know yet."""

    file_rows: int = 0
    recorded: int = 0
    stored: int = 0
    customers_updated: int = 0
    changes_applied: int = 0
    # Of changes_applied, those the online rows held already (a sync run again, no materialize).
    already_held: int = 0
    superseded_by_table: int = 0
    unknown_customers: int = 0
    seconds: float = 0.0
    file: Path | None = None

    def describe(self) -> str:
        lines = []
        if self.file is not None:
            lines.append(
                f"{self.file}: {self.file_rows:,} consent answers, {self.recorded:,} new "
                f"(the others were recorded before)"
            )
        lines.append(
            f"consents sync: {self.customers_updated:,} customers updated online "
            f"({self.changes_applied:,} changes held online, {self.already_held:,} of them "
            f"already), {self.superseded_by_table:,} changes "
            f"superseded by the consents table, {self.unknown_customers:,} customers unknown to "
            f"the online store (applied once materialized), of {self.stored:,} stored changes, "
            f"in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


# --- a file of consent answers ----------------------------------------------------------------


def _problem(path: Path, column: str, message: str, rows: pd.Index) -> ValueError:
    examples = ", ".join(str(int(row) + 1) for row in rows[:EXAMPLES])
    return ValueError(f"{path}, column {column}: {message} (rows {examples})")


def _granted(values: pd.Series, path: Path) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    text = values.astype(str).str.strip().str.lower()
    known = {"true": True, "1": True, "false": False, "0": False}
    wrong = ~text.isin(list(known)) | values.isna()
    if wrong.any():
        raise _problem(path, "granted", "must be true or false", values.index[wrong])
    return text.map(known).astype(bool)


def read_consent_file(path: Path) -> pd.DataFrame:
    """A Parquet or CSV file with the ``consents`` table's columns, checked and typed:
    ``updated_at`` as UTC (a time without a zone is read as UTC, as in the table)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    csv = path.suffix.lower() == ".csv"
    try:
        if csv:
            frame = pd.read_csv(
                path, dtype={CUSTOMER_KEY: str, "purpose": str}, keep_default_na=False
            )
        else:
            frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as error:
        # The library's own words name no file: say which, and what it should have been.
        kind = "CSV" if csv else "Parquet (or a .csv name for CSV)"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: not a readable {kind} file ({first})") from error
    missing = [name for name in CONSENTS.column_names if name not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    frame = frame[CONSENTS.column_names].reset_index(drop=True)
    ids = frame[CUSTOMER_KEY].astype(str)
    wrong = frame[CUSTOMER_KEY].isna() | (ids.str.len() == 0) | (ids.str.len() > MAX_ID_LENGTH)
    if wrong.any():
        raise _problem(path, CUSTOMER_KEY, "must be 1–64 characters", frame.index[wrong])
    wrong = ids.str.contains(ID_CONTROL_CHARACTERS, regex=True)
    if wrong.any():
        raise _problem(
            path, CUSTOMER_KEY, "must not contain control characters (NUL …)", frame.index[wrong]
        )
    wrong = ~frame["purpose"].isin(CONSENT_PURPOSES)
    if wrong.any():
        raise _problem(
            path, "purpose", f"must be one of {', '.join(CONSENT_PURPOSES)}", frame.index[wrong]
        )
    granted = _granted(frame["granted"], path)
    updated = pd.to_datetime(frame["updated_at"], utc=True, errors="coerce", format="mixed")
    if updated.isna().any():
        raise _problem(path, "updated_at", "must be a date-time", frame.index[updated.isna()])
    return pd.DataFrame(
        {CUSTOMER_KEY: ids, "purpose": frame["purpose"], "granted": granted, "updated_at": updated}
    )


def file_changes(frame: pd.DataFrame, received_at: dt.datetime) -> list[ConsentChangeRecord]:
    """The answers of a consent file as changes, each under the id derived from the answer."""
    changes = []
    for customer_id, purpose, granted, updated_at in frame[CONSENTS.column_names].itertuples(
        index=False
    ):
        moment = pd.Timestamp(updated_at).to_pydatetime()
        answer = ConsentAnswer(str(customer_id), str(purpose), bool(granted), moment)
        changes.append(
            ConsentChangeRecord(
                change_id=answer_change_id(answer),
                customer_id=answer.customer_id,
                purpose=answer.purpose,
                granted=answer.granted,
                updated_at=moment,
                received_at=received_at,
            )
        )
    return changes


# --- the sync ---------------------------------------------------------------------------------


def changes_to_apply(stored: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The stored changes to apply online, and how many the consents table overtook.

    Per customer and purpose, the newest stored change, when it is newer than the table's newest
    answer. Each carries ``granted_before``: marketing was granted before it, by the table or a
    stored change (so that its withdrawal is an objection).
    """
    keys = [CUSTOMER_KEY, "purpose"]
    newest = stored.sort_values([*keys, *CHANGE_ORDER], kind="stable").drop_duplicates(
        keys, keep="last"
    )
    table_newest = table.groupby(keys)["updated_at"].max().rename("table_updated_at")
    newest = newest.join(table_newest, on=keys)
    wins = newest["table_updated_at"].isna() | (newest["updated_at"] > newest["table_updated_at"])
    winners = newest[wins].drop(columns="table_updated_at")
    grants = pd.concat(
        [
            frame.loc[
                (frame["purpose"] == "marketing") & frame["granted"], [CUSTOMER_KEY, "updated_at"]
            ]
            for frame in (stored, table)
        ]
    )
    first_grant = grants.groupby(CUSTOMER_KEY)["updated_at"].min()
    winners = winners.assign(
        granted_before=(winners[CUSTOMER_KEY].map(first_grant) < winners["updated_at"]).to_numpy()
    )
    return winners.sort_values([CUSTOMER_KEY, "updated_at"], kind="stable"), int((~wins).sum())


@dataclass(frozen=True)
class _Change:
    change_id: str
    purpose: str
    granted: bool
    granted_before: bool
    updated_at: dt.datetime


def _by_customer(winners: pd.DataFrame) -> dict[str, list[_Change]]:
    """The changes to apply per customer, oldest first, as plain objects: a data frame per
    customer costs a millisecond, a sync of a million customers a quarter of an hour."""
    grouped: dict[str, list[_Change]] = {}
    columns = zip(
        winners[CUSTOMER_KEY],
        winners["change_id"],
        winners["purpose"],
        winners["granted"],
        winners["granted_before"],
        pd.DatetimeIndex(winners["updated_at"]).to_pydatetime(),
        strict=True,
    )
    for customer_id, change_id, purpose, granted, granted_before, updated_at in columns:
        grouped.setdefault(str(customer_id), []).append(
            _Change(str(change_id), str(purpose), bool(granted), bool(granted_before), updated_at)
        )
    return grouped


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sync_consents(
    settings: Settings,
    log: DecisionLog,
    *,
    file: Path | None = None,
    data_dir: Path | None = None,
    store: FeatureStore | None = None,
    project: str = PROJECT,
    now: dt.datetime | None = None,
) -> ConsentSyncReport:
    """Record ``file`` (when given), then apply the stored changes the consents table (in
    ``data_dir``, default the settings') has not overtaken on top of the online store's consent
    rows."""
    started = time.perf_counter()
    moment = now or dt.datetime.now(dt.UTC)
    file_rows = recorded = 0
    if file is not None:
        answers = read_consent_file(file)
        file_rows = len(answers)
        recorded = record_consent_changes(log, file_changes(answers, moment))
    stored = stored_consent_changes(log)
    if stored.empty:
        return ConsentSyncReport(
            file_rows, recorded, 0, seconds=time.perf_counter() - started, file=file
        )
    table = read_table(Path(data_dir or settings.data_dir), CONSENTS)
    winners, superseded = changes_to_apply(stored, table)
    if store is None:
        from features.store import open_store

        store = open_store(settings, project)
    rows = OnlineConsentRows(store, settings)
    updated = applied = unknown = already = 0
    by_customer = _by_customer(winners)
    customers = list(by_customer)
    for batch in _batches(customers, CUSTOMERS_PER_BATCH):
        current = rows.read(batch)
        writes: list[ConsentRowWrite] = []
        done: list[str] = []
        for customer_id in batch:
            row = current.get(customer_id)
            if row is None:
                unknown += 1
                continue
            changes = by_customer[customer_id]
            values = row.values
            for change in changes:
                values = apply_consent_answer(
                    values, change.purpose, change.granted, granted_before=change.granted_before
                )
            done.extend(change.change_id for change in changes)
            if values == row.values:
                already += len(changes)
                continue  # already applied (a sync without a materialize before it)
            newest = max(change.updated_at for change in changes)
            stamped = row.event_time or newest
            writes.append(ConsentRowWrite(customer_id, values, max(newest, stamped)))
        rows.write(writes)
        mark_consent_changes_applied(log, done, moment)
        updated += len(writes)
        applied += len(done)
    report = ConsentSyncReport(
        file_rows=file_rows,
        recorded=recorded,
        stored=len(stored),
        customers_updated=updated,
        changes_applied=applied,
        already_held=already,
        superseded_by_table=superseded,
        unknown_customers=unknown,
        seconds=time.perf_counter() - started,
        file=file,
    )
    logger.info("%s", report.describe())
    return report


# --- after a materialize ----------------------------------------------------------------------


def open_consent_log(url: str) -> DecisionLog | None:
    """The decision log when its database exists and has the consent changes table, else None.

    Nothing is created: a materialize on a machine without the API's database finds none.
    Raises SQLAlchemy's ``OperationalError`` when the database does not answer.
    """
    import sqlalchemy as sa

    from serving.decision_log.database import create_log_engine

    if is_sqlite_file(url):
        database = sa.engine.make_url(url).database
        if database is None or not Path(database).is_file():
            return None
    engine = create_log_engine(url)
    try:
        present = sa.inspect(engine).has_table("consent_changes")
    finally:
        engine.dispose()
    return DecisionLog(url) if present else None


def changes_known_at(settings: Settings, data_dir: Path, as_of: dt.datetime) -> pd.DataFrame | None:
    """The consent answers the decision log had received by ``as_of``, stamped by then, that the
    consents table as of then has not overtaken: what a materialize at ``as_of`` followed by a
    sync leaves applied online (``changes_to_apply``'s rows). None without a log, or without
    answers. Raises SQLAlchemy's ``OperationalError`` when the log's database does not answer."""
    log = open_consent_log(settings.database_url)
    if log is None:
        return None
    try:
        stored = stored_consent_changes(log)
    finally:
        log.close()
    moment = pd.Timestamp(as_of)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    stored = stored[(stored["updated_at"] <= moment) & (stored["received_at"] <= moment)]
    if stored.empty:
        return None
    table = read_table(data_dir, CONSENTS)
    table = table[pd.to_datetime(table["updated_at"], utc=True) <= moment]
    winners, _ = changes_to_apply(stored, table)
    return winners


def sync_after_materialize(
    settings: Settings, data_dir: Path | None = None, project: str = PROJECT
) -> str:
    """Run the sync after a materialize; a line saying what it did, or a warning when the
    decision log's database cannot be reached (the materialize stands either way). A consents
    table that cannot be read raises ``ValueError``."""
    import sqlalchemy as sa

    try:
        log = open_consent_log(settings.database_url)
    except sa.exc.SQLAlchemyError as error:
        logger.warning(
            "consent changes not synced: the decision log database does not answer",
            extra={"error": type(error).__name__},
        )
        return (
            "warning: consent changes received through the API were NOT applied again: the "
            f"decision log database does not answer ({type(error).__name__}); until "
            "`offers consents sync` runs, the online store holds the consents table's answers "
            "only"
        )
    if log is None:
        return "consents sync: the decision log database has no consent changes; nothing to apply"
    try:
        return sync_consents(settings, log, data_dir=data_dir, project=project).describe()
    finally:
        log.close()
