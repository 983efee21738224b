"""Checking the input tables against docs/data-contract.md before anything is trained or written.

:func:`validate_tables` reads every table through :mod:`core.tables` (which already refuses a
missing or unreadable file, a missing column, a wrong type and a null where none is allowed) and
then checks the rows: unique keys, enumerations, known customers, plans and offers, dates in order,
no overlapping contracts, no negative usage or money, ranks from 1, propensities in (0, 1].

Every problem found is gathered into one :class:`ContractError`; each line names the file, the
column and up to five rows at fault (row number in the file, key values and the bad value).

:func:`require_valid`, which the commands that read the tables call, may remember what it found
valid: a record in the feature tables' folder, never in the input folder, names each input file's
size, modification and change times, the catalog and these rules; while all are unchanged the
tables are not read again (a 2.6-million-customer world takes about a minute to check).
``offers validate`` always reads every row.

Two choices the contract leaves open:
- A contract's ``valid_to`` is the day it ended; the next one may start that same day, not before.
- A contract with ``valid_to`` null is current, so no later contract of that customer may exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from core.contract import (
    CONSENT_PURPOSES,
    CONSENTS,
    CONTRACTS,
    CUSTOMERS,
    INVOICES,
    OFFER_EVENTS,
    OUTCOMES,
    SEGMENTS,
    TABLES,
    USAGE_MONTHLY,
    Table,
)
from core.files import replacing
from core.tables import ContractError, Problem, input_table_path, read_table, row_examples

__all__ = [
    "VALIDATED_RECORD",
    "ContractError",
    "Problem",
    "ValidationReport",
    "require_valid",
    "validate_tables",
]

logger = logging.getLogger(__name__)

# Shown in a message about unknown ids; the catalog itself is short, but keep the line readable.
_MAX_LISTED_IDS = 12


@dataclass(frozen=True)
class ValidationReport:
    """What was checked: the folder, the rows per table and how long it took."""

    data_dir: Path
    row_counts: dict[str, int]
    seconds: float = 0.0
    # Found valid before and unchanged since (require_valid's record), so not read this time.
    remembered: bool = False

    def describe(self) -> str:
        counts = ", ".join(f"{name} {rows:,}" for name, rows in self.row_counts.items())
        how = (
            "unchanged since they were checked"
            if self.remembered
            else f"checked in {self.seconds:.1f} s"
        )
        return (
            f"{self.data_dir}: {len(self.row_counts)} tables match docs/data-contract.md "
            f"(rows: {counts}; {how})"
        )


def _as_mask(values: pd.Series | np.ndarray) -> np.ndarray:
    """A plain boolean array; a missing comparison (null) is not a fault here."""
    if isinstance(values, pd.Series):
        if values.dtype == "boolean":
            return values.fillna(False).to_numpy(dtype=bool)
        return values.to_numpy(dtype=bool, na_value=False)
    return np.asarray(values, dtype=bool)


@dataclass
class _RowChecks:
    """Collects row problems of one table, each with up to five example rows."""

    frame: pd.DataFrame
    table: Table
    path: Path
    problems: list[Problem] = field(default_factory=list)

    def flag(
        self,
        column: str,
        mask: pd.Series | np.ndarray,
        what: str,
        show: Iterable[str] = (),
    ) -> None:
        faulty = _as_mask(mask)
        count = int(faulty.sum())
        if count:
            rows = "1 row" if count == 1 else f"{count:,} rows"
            shown = [name for name in (column, *show) if name in self.frame.columns]
            examples = row_examples(self.frame, self.table, faulty, shown)
            self.problems.append(Problem(self.path, column, f"{rows} {what}", examples))

    def unique_key(self) -> None:
        key = list(self.table.key)
        duplicated = self.frame.duplicated(subset=key, keep=False)
        self.flag(
            ", ".join(key), duplicated, "share a key with another row (the key must be unique)"
        )

    def non_negative(self, *columns: str) -> None:
        for column in columns:
            self.flag(column, self.frame[column] < 0, "with a negative value")

    def finite(self, *columns: str, nullable: bool = False) -> None:
        for column in columns:
            values = self.frame[column]
            bad = np.isinf(values.to_numpy(dtype=float))
            if not nullable:
                bad |= values.isna().to_numpy()
            self.flag(column, bad, "with a value that is not a finite number")

    def one_of(self, column: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        values = self.frame[column]
        self.flag(
            column,
            ~values.isin(allowed) & values.notna(),
            f"with a value that is not one of {', '.join(allowed)}",
        )

    def known_customer(self, customer_ids: pd.Index | None) -> None:
        if customer_ids is None:
            return  # customers could not be read; that is reported, and every row would be flagged
        self.flag(
            CUSTOMER_KEY,
            ~self.frame[CUSTOMER_KEY].isin(customer_ids),
            "with a customer_id that is not in customers",
        )

    def not_before(self, later: str, earlier: str) -> None:
        self.flag(
            later,
            self.frame[later] < self.frame[earlier],
            f"where {later} is before {earlier}",
            [earlier],
        )


def _listing(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:_MAX_LISTED_IDS])
    return shown + (", …" if len(ids) > _MAX_LISTED_IDS else "")


def _overlapping_contracts(frame: pd.DataFrame) -> np.ndarray:
    """Both rows of every pair of consecutive contracts of a customer whose periods overlap."""
    ordered = frame.sort_values([CUSTOMER_KEY, "valid_from"], kind="stable")
    customers = ordered[CUSTOMER_KEY].to_numpy()
    starts = ordered["valid_from"].to_numpy()
    ends = ordered["valid_to"].to_numpy()
    same_customer = customers[1:] == customers[:-1]
    # An open contract (valid_to null) runs until today: any later contract overlaps it.
    overlaps = same_customer & (np.isnat(ends[:-1]) | (starts[1:] < ends[:-1]))
    positions = ordered.index.to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    mask[positions[:-1][overlaps]] = True
    mask[positions[1:][overlaps]] = True
    return mask


def _check_customers(checks: _RowChecks, catalog: Catalog, customer_ids: pd.Index | None) -> None:
    frame = checks.frame
    checks.one_of("segment", SEGMENTS)
    satisfaction = frame["satisfaction"]
    checks.flag("satisfaction", (satisfaction < 1) | (satisfaction > 5), "with a value outside 1–5")


def _check_contracts(checks: _RowChecks, catalog: Catalog, customer_ids: pd.Index | None) -> None:
    frame = checks.frame
    checks.known_customer(customer_ids)
    plans = {offer.offer_id for offer in catalog.plans}
    checks.flag(
        "plan_id",
        ~frame["plan_id"].isin(plans),
        f"with a plan_id that is not a plan in the catalog (plans: {_listing(plans)})",
    )
    checks.not_before("valid_to", "valid_from")
    checks.not_before("binding_end_date", "valid_from")
    checks.finite("monthly_fee_sek")
    checks.non_negative("monthly_fee_sek")
    checks.flag(
        "valid_from",
        _overlapping_contracts(frame),
        "in contract periods of the same customer that overlap",
        ["valid_to"],
    )


def _check_usage(checks: _RowChecks, catalog: Catalog, customer_ids: pd.Index | None) -> None:
    frame = checks.frame
    checks.known_customer(customer_ids)
    checks.flag("month", frame["month"].dt.day != 1, "where month is not the first day of a month")
    checks.finite("data_gb", "voice_minutes", "roaming_data_gb", "overage_sek")
    checks.non_negative(
        "data_gb", "voice_minutes", "sms", "roaming_days", "roaming_data_gb", "overage_sek"
    )
    checks.flag("roaming_days", frame["roaming_days"] > 31, "with more than 31 roaming days")


def _check_invoices(checks: _RowChecks, catalog: Catalog, customer_ids: pd.Index | None) -> None:
    checks.known_customer(customer_ids)
    checks.not_before("due_date", "invoice_date")
    checks.not_before("paid_date", "invoice_date")
    checks.finite("amount_sek", "invoice_fee_sek", "reminder_fee_sek")
    checks.non_negative("amount_sek", "invoice_fee_sek", "reminder_fee_sek", "reminders")


def _check_consents(checks: _RowChecks, catalog: Catalog, customer_ids: pd.Index | None) -> None:
    checks.known_customer(customer_ids)
    checks.one_of("purpose", CONSENT_PURPOSES)


def _check_offer_events(
    checks: _RowChecks, catalog: Catalog, customer_ids: pd.Index | None
) -> None:
    frame = checks.frame
    checks.known_customer(customer_ids)
    offers = {offer.offer_id for offer in catalog.offers}
    checks.flag(
        "offer_id",
        ~frame["offer_id"].isin(offers),
        f"with an offer_id that is not in the catalog (offers: {_listing(offers)})",
    )
    checks.flag("rank", frame["rank"] < 1, "with a rank below 1 (the first offer has rank 1)")
    propensity = frame["propensity"]
    checks.flag(
        "propensity",
        (propensity <= 0) | (propensity > 1),
        "with a propensity outside (0, 1]",
    )
    checks.one_of("outcome", OUTCOMES)
    checks.not_before("outcome_at", "shown_at")


_RowCheck = Callable[[_RowChecks, Catalog, pd.Index | None], None]

_ROW_CHECKS: dict[str, _RowCheck] = {
    CUSTOMERS.name: _check_customers,
    CONTRACTS.name: _check_contracts,
    USAGE_MONTHLY.name: _check_usage,
    INVOICES.name: _check_invoices,
    CONSENTS.name: _check_consents,
    OFFER_EVENTS.name: _check_offer_events,
}


def validate_tables(data_dir: Path, catalog: Catalog) -> ValidationReport:
    """Check every input table in ``data_dir``; raise :class:`ContractError` on any fault.

    Nothing is written. Tables are read one at a time (customers first, for the id checks) so the
    largest ones are never in memory together.
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ContractError([Problem(data_dir, None, "folder of input tables not found")])
    problems: list[Problem] = []
    row_counts: dict[str, int] = {}
    customer_ids: pd.Index | None = None
    # Customers first: the other tables' customer_id is checked against it.
    for table in sorted(TABLES, key=lambda table: table is not CUSTOMERS):
        try:
            frame = read_table(data_dir, table)
        except ContractError as error:
            problems.extend(error.problems)
            continue
        row_counts[table.name] = len(frame)
        checks = _RowChecks(frame, table, input_table_path(data_dir, table))
        checks.unique_key()
        _ROW_CHECKS[table.name](checks, catalog, customer_ids)
        problems.extend(checks.problems)
        if table is CUSTOMERS:
            customer_ids = pd.Index(frame[CUSTOMER_KEY].unique())
        del frame, checks
    if problems:
        raise ContractError(problems)
    report = ValidationReport(data_dir, row_counts, time.perf_counter() - started)
    logger.info("%s", report.describe())
    return report


# In the folder require_valid is given to remember in: what it found valid, by input folder. A dot
# file, so that a folder scan of Parquet files passes it by.
VALIDATED_RECORD = ".validated-input.json"
# The rules themselves: a record written by other rules (another version of this module or of the
# contract) does not count.
_RULES = hashlib.sha256(
    b"".join(
        Path(module).read_bytes()
        for module in (
            __file__,
            Path(__file__).with_name("contract.py"),
            Path(__file__).with_name("tables.py"),
        )
    )
).hexdigest()


def require_valid(
    data_dir: Path,
    catalog: Catalog,
    remember_in: Path | None = None,
    *,
    create_folder: bool = False,
) -> ValidationReport:
    """Refuse input that breaks the contract; commands call this before they write anything.

    ``remember_in``: the feature tables' folder, where a record of tables found valid is kept
    (only when the folder exists, or with ``create_folder`` once the tables are found valid: the
    feature build, which writes its tables there next; else the first command after a build into
    a new folder would read and check every table again). Tables found valid before and
    unchanged since (each file's size, modification and change times), with the same catalog and
    rules, are then not read again, and the report says how many rows they had. Otherwise every
    table is checked (:func:`validate_tables`) and, when valid and unchanged while checked,
    recorded there (a folder that cannot be written is only logged).
    Nothing is ever written to ``data_dir``.
    """
    if remember_in is None:
        return validate_tables(data_dir, catalog)
    key = str(Path(data_dir).resolve())
    record_path = Path(remember_in) / VALIDATED_RECORD
    before = _fingerprint(Path(data_dir), catalog)
    try:
        records = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        records = {}
    records = records if isinstance(records, dict) else {}
    known = records.get(key)
    if isinstance(known, dict) and known.get("fingerprint") == before:
        logger.info("%s: the input tables are unchanged since they were found valid", data_dir)
        return ValidationReport(Path(data_dir), dict(known.get("row_counts", {})), remembered=True)
    report = validate_tables(data_dir, catalog)
    unchanged = _fingerprint(Path(data_dir), catalog) == before  # not changed while being read
    if unchanged and (create_folder or record_path.parent.is_dir()):
        records[key] = {"fingerprint": before, "row_counts": report.row_counts}
        try:
            # replacing() makes the folder when it is missing.
            with replacing(record_path) as (temporary,):
                temporary.write_text(json.dumps(records, indent=1), encoding="utf-8")
        except OSError as error:
            logger.info("%s: not recorded as valid (%s)", data_dir, error.strerror or error)
    return report


def _fingerprint(data_dir: Path, catalog: Catalog) -> dict[str, object]:
    """What a validation depends on: each table file's size, modification and change times and
    inode (None for a missing table), the catalog and the rules."""
    files: dict[str, list[list[object]] | None] = {}
    for table in TABLES:
        path = input_table_path(data_dir, table)
        # A folder of parts: every file in it (a part rewritten in place leaves the folder's own
        # time as it was).
        parts = (
            sorted(part for part in path.rglob("*") if part.is_file()) if path.is_dir() else [path]
        )
        try:
            files[table.name] = [
                # The change time too: a copy that keeps the modification time (cp -p,
                # rsync -a) still gets a new one, and nobody can set it.
                [
                    str(part.relative_to(data_dir)),
                    status.st_size,
                    status.st_mtime_ns,
                    status.st_ctime_ns,
                    status.st_ino,
                ]
                for part in parts
                for status in (part.stat(),)
            ]
        except OSError:
            files[table.name] = None
    return {
        "rules": _RULES,
        "catalog": hashlib.sha256(catalog.model_dump_json().encode()).hexdigest(),
        "tables": files,
    }
