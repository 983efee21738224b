"""Input tables against docs/data-contract.md: a valid world passes; each bad file is refused."""

from __future__ import annotations

import datetime as dt
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from core.catalog import Catalog, Offer
from core.contract import (
    CONSENTS,
    CONTRACTS,
    CUSTOMERS,
    INVOICES,
    OFFER_EVENTS,
    TABLES,
    TABLES_BY_NAME,
    USAGE_MONTHLY,
    Table,
)
from core.tables import ContractError, Problem, read_table, read_tables
from core.validation import VALIDATED_RECORD, ValidationReport, require_valid, validate_tables

Frames = dict[str, pd.DataFrame]

CATALOG_YAML = """
offers:
  - offer_id: PLAN_5GB
    kind: plan
    title: {sv: "Mobil 5 GB", en: "Mobile 5 GB"}
    monthly_fee_sek: 179.0
    data_gb: 5
    valid_from: 2020-01-01
  - offer_id: PLAN_30GB
    kind: plan
    title: {sv: "Mobil 30 GB", en: "Mobile 30 GB"}
    monthly_fee_sek: 299.0
    new_customer_fee_sek: 279.0
    data_gb: 30
    valid_from: 2020-01-01
  - offer_id: ADDON_DATA_10GB
    kind: addon
    title: {sv: "Extra surf 10 GB", en: "Extra data 10 GB"}
    monthly_fee_sek: 79.0
    data_gb: 10
    valid_from: 2020-01-01
"""


def _catalog() -> Catalog:
    def offer(offer_id: str, kind: str, fee: float) -> Offer:
        return Offer.model_validate(
            {
                "offer_id": offer_id,
                "kind": kind,
                "title": {"sv": offer_id, "en": offer_id},
                "monthly_fee_sek": fee,
                "valid_from": dt.date(2020, 1, 1),
            }
        )

    return Catalog(
        offers=(
            offer("PLAN_5GB", "plan", 179.0),
            offer("PLAN_30GB", "plan", 299.0),
            offer("ADDON_DATA_10GB", "addon", 79.0),
        )
    )


CATALOG = _catalog()


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def valid_frames() -> Frames:
    """Three customers, two months: every table of the contract, every rule kept."""
    customers = pd.DataFrame(
        {
            "customer_id": ["C001", "C002", "C003"],
            "birth_year": [1980, 1995, 1962],
            "signup_date": [_day("2019-03-04"), _day("2021-06-01"), _day("2015-01-20")],
            "region": ["Stockholm", "Skåne", "Norrbotten"],
            "segment": ["consumer", "consumer", "business"],
            "satisfaction": pd.array([4, None, 2], dtype="Int64"),
        }
    )
    contracts = pd.DataFrame(
        {
            "customer_id": ["C001", "C001", "C002", "C003"],
            "plan_id": ["PLAN_5GB", "PLAN_30GB", "PLAN_5GB", "PLAN_30GB"],
            "valid_from": [
                _day(d) for d in ("2019-03-04", "2024-02-01", "2021-06-01", "2015-01-20")
            ],
            "valid_to": [_day("2024-02-01"), None, None, None],
            "binding_end_date": [None, _day("2025-02-01"), None, None],
            "monthly_fee_sek": [179.0, 299.0, 179.0, 299.0],
        }
    )
    months = [_day("2026-09-01"), _day("2026-10-01")]
    customer_months = [(c, m) for c in ("C001", "C002", "C003") for m in months]
    usage = pd.DataFrame(
        {
            "customer_id": [c for c, _ in customer_months],
            "month": [m for _, m in customer_months],
            "data_gb": [12.5, 31.0, 2.0, 1.5, 40.0, 28.0],
            "voice_minutes": [120.0, 90.0, 300.0, 280.0, 15.0, 20.0],
            "sms": [10, 4, 0, 2, 50, 40],
            "roaming_days": [0, 3, 0, 0, 7, 0],
            "roaming_data_gb": [0.0, 2.5, 0.0, 0.0, 4.0, 0.0],
            "overage_sek": [0.0, 49.0, 0.0, 0.0, 99.0, 0.0],
        }
    )
    invoice_dates = [_day("2026-09-30"), _day("2026-10-31")] * 3
    invoices = pd.DataFrame(
        {
            "invoice_id": [f"INV-{i:04d}" for i in range(1, 7)],
            "customer_id": usage["customer_id"],
            "invoice_date": invoice_dates,
            "due_date": [d + dt.timedelta(days=30) for d in invoice_dates],
            "amount_sek": [299.0, 348.0, 179.0, 179.0, 398.0, 299.0],
            "invoice_fee_sek": [0.0, 0.0, 29.0, 29.0, 0.0, 0.0],
            "reminder_fee_sek": [0.0, 0.0, 60.0, 0.0, 0.0, 0.0],
            "paid_date": [
                _day("2026-10-20"),
                None,
                _day("2026-11-15"),
                None,
                _day("2026-10-28"),
                _day("2026-11-25"),
            ],
            "reminders": [0, 0, 1, 0, 0, 0],
            "sent_to_collection": [False, False, False, False, False, False],
        }
    )
    consents = pd.DataFrame(
        {
            "customer_id": ["C001", "C001", "C001", "C002", "C002", "C003"],
            "purpose": [
                "marketing",
                "profiling",
                "marketing",
                "marketing",
                "usage_insights",
                "marketing",
            ],
            "granted": [True, True, False, True, True, True],
            "updated_at": [
                _utc("2024-01-01 10:00"),
                _utc("2024-01-01 10:00"),
                _utc("2025-05-01 08:30"),
                _utc("2024-03-01 12:00"),
                _utc("2024-03-01 12:00"),
                _utc("2023-11-11 09:00"),
            ],
        }
    )
    offer_events = pd.DataFrame(
        {
            "decision_id": ["D-1", "D-1", "D-2"],
            "invoice_id": ["INV-0001", "INV-0001", "INV-0005"],
            "customer_id": ["C001", "C001", "C003"],
            "offer_id": ["PLAN_30GB", "ADDON_DATA_10GB", "PLAN_5GB"],
            "shown_at": [_utc("2026-10-01 06:00")] * 2 + [_utc("2026-11-01 06:00")],
            "rank": [1, 2, 1],
            "policy": ["model", "model", "rules"],
            "propensity": [0.21, 0.05, None],
            "outcome": ["accepted", "ignored", "declined"],
            "outcome_at": [_utc("2026-10-03 18:12"), None, _utc("2026-11-02 07:00")],
        }
    )
    return {
        CUSTOMERS.name: customers,
        CONTRACTS.name: contracts,
        USAGE_MONTHLY.name: usage,
        INVOICES.name: invoices,
        CONSENTS.name: consents,
        OFFER_EVENTS.name: offer_events,
    }


def write_table(folder: Path, table: Table, frame: pd.DataFrame, schema: pa.Schema | None = None):
    """Write one table with the contract's Arrow schema (or the one given)."""
    arrow = pa.Table.from_pandas(frame, schema=schema or table.arrow_schema(), preserve_index=False)
    pq.write_table(arrow, folder / table.file_name)


def write_world(folder: Path, frames: Frames | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (frames or valid_frames()).items():
        write_table(folder, TABLES_BY_NAME[name], frame)
    return folder


def world_with(tmp_path: Path, table: Table, change: Callable[[pd.DataFrame], None]) -> Path:
    """A valid world in which one table has been changed in place by ``change``."""
    frames = valid_frames()
    change(frames[table.name])
    return write_world(tmp_path / "world", frames)


def refusal(folder: Path) -> str:
    with pytest.raises(ContractError) as raised:
        validate_tables(folder, CATALOG)
    return str(raised.value)


def assert_refused(folder: Path, table: Table, column: str | None, *shown: str) -> str:
    message = refusal(folder)
    assert str(folder / table.file_name) in message
    if column is not None:
        assert f"{'columns' if ',' in column else 'column'} {column}" in message
    for text in shown:
        assert text in message
    return message


# --- valid input ---------------------------------------------------------------------------------


def test_a_valid_world_passes_with_its_row_counts(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")

    report = validate_tables(folder, CATALOG)

    assert report.row_counts == {
        "customers": 3,
        "contracts": 4,
        "usage_monthly": 6,
        "invoices": 6,
        "consents": 6,
        "offer_events": 3,
    }
    assert "6 tables match docs/data-contract.md" in report.describe()
    assert "usage_monthly 6" in report.describe()


def test_require_valid_gives_the_same_report_and_writes_nothing(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    before = sorted((path.name, path.stat().st_mtime_ns) for path in folder.iterdir())

    report = require_valid(folder, CATALOG)

    assert isinstance(report, ValidationReport)
    assert report.row_counts == validate_tables(folder, CATALOG).row_counts
    assert report.row_counts["customers"] == 3
    assert sorted((path.name, path.stat().st_mtime_ns) for path in folder.iterdir()) == before


def test_tables_found_valid_and_unchanged_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_world(tmp_path / "world")
    before = sorted((path.name, path.stat().st_mtime_ns) for path in folder.iterdir())
    remember = tmp_path / "features"
    remember.mkdir()

    first = require_valid(folder, CATALOG, remember_in=remember)
    assert not first.remembered
    assert (remember / VALIDATED_RECORD).is_file()
    reads: list[str] = []
    monkeypatch.setattr(
        "core.validation.read_table", lambda data_dir, table: reads.append(table.name)
    )

    again = require_valid(folder, CATALOG, remember_in=remember)

    assert reads == []
    assert again.remembered and again.row_counts == first.row_counts
    assert "unchanged since they were checked" in again.describe()
    # The input folder is never written to.
    assert sorted((path.name, path.stat().st_mtime_ns) for path in folder.iterdir()) == before


def test_a_table_changed_after_it_was_found_valid_is_checked_again(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    remember = tmp_path / "features"
    remember.mkdir()
    require_valid(folder, CATALOG, remember_in=remember)
    frames = valid_frames()
    frames["invoices"].loc[0, "customer_id"] = "C-NOBODY"
    written = (folder / INVOICES.file_name).stat()
    write_table(folder, INVOICES, frames["invoices"])
    # Its modification time put back, as a copy that keeps times would: still checked again.
    os.utime(folder / INVOICES.file_name, ns=(written.st_atime_ns, written.st_mtime_ns))

    with pytest.raises(ContractError, match="C-NOBODY"):
        require_valid(folder, CATALOG, remember_in=remember)
    # Still refused: a refusal is never remembered as valid.
    with pytest.raises(ContractError, match="C-NOBODY"):
        require_valid(folder, CATALOG, remember_in=remember)


def test_another_catalog_or_a_removed_table_is_checked_again(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    remember = tmp_path / "features"
    remember.mkdir()
    require_valid(folder, CATALOG, remember_in=remember)
    without_plan = Catalog(offers=tuple(o for o in CATALOG.offers if o.offer_id != "PLAN_5GB"))

    with pytest.raises(ContractError, match="PLAN_5GB"):
        require_valid(folder, without_plan, remember_in=remember)
    (folder / OFFER_EVENTS.file_name).unlink()
    with pytest.raises(ContractError, match="file not found"):
        require_valid(folder, CATALOG, remember_in=remember)


def test_the_feature_build_records_valid_tables_in_the_folder_it_creates(tmp_path: Path) -> None:
    """The build writes its tables into a new folder next: the record goes there too, so that
    the command after it does not check every table again. Refused tables create nothing."""
    folder = write_world(tmp_path / "world")
    new_folder = tmp_path / "new" / "features"

    require_valid(folder, CATALOG, remember_in=new_folder)
    assert not new_folder.exists()  # without create_folder, nothing is created for the record

    first = require_valid(folder, CATALOG, remember_in=new_folder, create_folder=True)
    assert not first.remembered and (new_folder / VALIDATED_RECORD).is_file()
    assert require_valid(folder, CATALOG, remember_in=new_folder).remembered

    frames = valid_frames()
    frames["invoices"].loc[0, "customer_id"] = "C-NOBODY"
    refused = write_world(tmp_path / "refused", frames)
    never = tmp_path / "never" / "features"
    with pytest.raises(ContractError, match="C-NOBODY"):
        require_valid(refused, CATALOG, remember_in=never, create_folder=True)
    assert not never.parent.exists()


def test_a_folder_that_cannot_be_written_only_costs_the_record(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("", encoding="utf-8")

    report = require_valid(folder, CATALOG, remember_in=not_a_folder / "features")

    assert not report.remembered and report.row_counts["customers"] == 3


def test_extra_columns_are_accepted_and_not_read(tmp_path: Path) -> None:
    frames = valid_frames()
    usage = frames[USAGE_MONTHLY.name]
    usage["network"] = ["5G"] * len(usage)
    schema = USAGE_MONTHLY.arrow_schema().append(pa.field("network", pa.string()))
    folder = write_world(tmp_path / "world", frames)
    write_table(folder, USAGE_MONTHLY, usage, schema)

    assert validate_tables(folder, CATALOG).row_counts["usage_monthly"] == 6
    assert list(read_table(folder, USAGE_MONTHLY).columns) == USAGE_MONTHLY.column_names


def test_read_tables_gives_the_documented_dtypes(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")

    tables = read_tables(folder)

    assert set(tables) == {table.name for table in TABLES}
    customers = tables["customers"]
    assert str(customers["signup_date"].dtype) == "datetime64[ns]"
    assert str(customers["satisfaction"].dtype) == "Int64"
    assert customers["satisfaction"].isna().tolist() == [False, True, False]
    assert str(customers["birth_year"].dtype) == "int64"
    contracts = tables["contracts"]
    assert contracts["valid_to"].isna().tolist() == [False, True, True, True]
    assert contracts.loc[0, "valid_to"] == pd.Timestamp("2024-02-01")
    events = tables["offer_events"]
    assert str(events["shown_at"].dtype) == "datetime64[ns, UTC]"
    assert events.loc[0, "outcome_at"] == _utc("2026-10-03 18:12")
    assert tables["invoices"]["sent_to_collection"].dtype == bool
    assert tables["usage_monthly"]["data_gb"].dtype == float


@pytest.mark.parametrize("stored_as", [pa.date32(), pa.timestamp("us"), pa.timestamp("ns", "UTC")])
def test_a_days_invoices_are_read_alone_whatever_type_holds_the_date(
    tmp_path: Path, stored_as: pa.DataType
) -> None:
    from pipelines.invoice_run.core import invoices_of_day

    folder = write_world(tmp_path / "world")
    invoices = valid_frames()["invoices"]
    if pa.types.is_timestamp(stored_as):
        invoices["invoice_date"] = pd.to_datetime(
            invoices["invoice_date"], utc=stored_as.tz is not None
        )
    schema = INVOICES.arrow_schema()
    at = schema.get_field_index("invoice_date")
    write_table(folder, INVOICES, invoices, schema.set(at, pa.field("invoice_date", stored_as)))

    day = invoices_of_day(folder, _day("2026-10-31"))
    read = read_table(
        folder,
        INVOICES,
        columns=["invoice_date", "reminders"],
        rows=lambda table: pc.equal(table["reminders"], 0),
    )

    assert day.to_dict("list") == {
        "invoice_id": ["INV-0002", "INV-0004", "INV-0006"],
        "customer_id": ["C001", "C002", "C003"],
    }
    assert list(read.columns) == ["invoice_id", "invoice_date", "reminders"]  # and the key
    assert read["invoice_id"].tolist() == [
        "INV-0001",
        "INV-0002",
        "INV-0004",
        "INV-0005",
        "INV-0006",
    ]
    with pytest.raises(ValueError, match="the invoices table has no column colour"):
        read_table(folder, INVOICES, columns=["colour"])


def test_pandas_datetimes_at_midnight_are_dates_and_naive_timestamps_are_utc(
    tmp_path: Path,
) -> None:
    """What ``DataFrame.to_parquet`` writes for datetime64 columns is accepted as the contract."""
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    usage = frames[USAGE_MONTHLY.name].copy()
    usage["month"] = pd.to_datetime(usage["month"])
    usage["sms"] = usage["sms"].astype("int32")
    usage.to_parquet(folder / USAGE_MONTHLY.file_name)
    consents = frames[CONSENTS.name].copy()
    consents["updated_at"] = consents["updated_at"].dt.tz_localize(None)
    consents.to_parquet(folder / CONSENTS.file_name)

    validate_tables(folder, CATALOG)
    usage_read = read_table(folder, USAGE_MONTHLY)
    assert usage_read["month"].iloc[1] == pd.Timestamp("2026-10-01")
    assert usage_read["sms"].dtype == "int64"
    consents_read = read_table(folder, CONSENTS)
    assert consents_read["updated_at"].iloc[0] == _utc("2024-01-01 10:00")


def test_an_empty_nullable_column_written_by_pandas_is_accepted(tmp_path: Path) -> None:
    """pandas writes an all-None column with Arrow's null type; a nullable column may be empty."""
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    contracts = frames[CONTRACTS.name].assign(binding_end_date=None)
    contracts.to_parquet(folder / CONTRACTS.file_name)
    written = pq.read_schema(folder / CONTRACTS.file_name)
    assert pa.types.is_null(written.field("binding_end_date").type)

    validate_tables(folder, CATALOG)
    assert read_table(folder, CONTRACTS)["binding_end_date"].isna().all()


def test_the_error_survives_a_trip_to_another_process() -> None:
    error = ContractError([Problem(Path("data/raw/x.parquet"), "a", "1 row with a negative value")])

    copy = pickle.loads(pickle.dumps(error))

    assert str(copy) == str(error)
    assert copy.problems == error.problems


# --- files and columns ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    (folder / "invoices.parquet").unlink()

    message = assert_refused(folder, INVOICES, None, "file not found")
    assert message.count("\n") == 0  # one problem, one line


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="folder of input tables not found"):
        validate_tables(tmp_path / "nowhere", CATALOG)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    (folder / "consents.parquet").write_text("customer_id,purpose\nC001,marketing\n")

    assert_refused(folder, CONSENTS, None, "not a readable Parquet file")


def test_missing_column(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    customers = frames[CUSTOMERS.name].drop(columns=["segment"])
    schema = pa.schema([f for f in CUSTOMERS.arrow_schema() if f.name != "segment"])
    write_table(folder, CUSTOMERS, customers, schema)

    assert_refused(folder, CUSTOMERS, "segment", "missing column")


def test_tables_read_into_pandas_and_written_back_unchanged_stay_valid(tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")
    for table in TABLES:
        path = folder / table.file_name
        # Written without pandas' metadata (as the simulator and Spark write), read into pandas
        # and written back: an int column with nulls becomes float64.
        pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
        pd.read_parquet(path).to_parquet(path)
    assert pq.read_schema(folder / CUSTOMERS.file_name).field("satisfaction").type == pa.float64()
    validate_tables(folder, _catalog())  # raises ContractError on any fault
    customers = read_table(folder, CUSTOMERS)
    assert str(customers["satisfaction"].dtype) == "Int64"
    assert customers["satisfaction"].tolist() == [4, pd.NA, 2]


def test_a_fraction_in_an_integer_column_is_refused(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    customers = frames[CUSTOMERS.name]
    customers["satisfaction"] = pd.array([4.0, None, 2.5], dtype="Float64")
    customers.to_parquet(folder / CUSTOMERS.file_name)
    assert_refused(folder, CUSTOMERS, "satisfaction", "cannot be read as int")


def test_wrong_type(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    usage = frames[USAGE_MONTHLY.name]
    usage["data_gb"] = usage["data_gb"].astype(str)  # "12.5": text, not a number
    usage.to_parquet(folder / USAGE_MONTHLY.file_name)

    message = assert_refused(
        folder, USAGE_MONTHLY, "data_gb", "has type string", "expected a number"
    )
    assert "[" not in message  # consoles read square brackets as markup


def test_dates_stored_as_text_are_refused(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    invoices = frames[INVOICES.name]
    invoices["due_date"] = invoices["due_date"].astype(str)
    invoices.to_parquet(folder / INVOICES.file_name)

    assert_refused(folder, INVOICES, "due_date", "expected a date")


def test_a_time_of_day_in_a_date_column(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    usage = frames[USAGE_MONTHLY.name]
    usage["month"] = pd.to_datetime(usage["month"])
    usage.loc[3, "month"] = pd.Timestamp("2026-10-01 13:45")
    usage.to_parquet(folder / USAGE_MONTHLY.file_name)

    assert_refused(folder, USAGE_MONTHLY, "month", "time of day", "row 3", "customer_id=C002")


def test_timestamps_in_another_time_zone_are_refused(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    events = frames[OFFER_EVENTS.name]
    events["shown_at"] = events["shown_at"].dt.tz_convert("Europe/Stockholm")
    events.to_parquet(folder / OFFER_EVENTS.file_name)

    assert_refused(
        folder, OFFER_EVENTS, "shown_at", "Europe/Stockholm", "expected a timestamp in UTC"
    )


def test_a_far_future_end_date_is_refused_with_advice(tmp_path: Path) -> None:
    def sentinel(contracts: pd.DataFrame) -> None:
        contracts.loc[2, "valid_to"] = _day("9999-12-31")

    folder = world_with(tmp_path, CONTRACTS, sentinel)

    assert_refused(folder, CONTRACTS, "valid_to", "9999-12-31", "customer_id=C002", "use null")


def test_null_in_a_column_that_must_have_a_value(tmp_path: Path) -> None:
    def no_plan(contracts: pd.DataFrame) -> None:
        contracts.loc[3, "plan_id"] = None

    frames = valid_frames()
    no_plan(frames[CONTRACTS.name])
    folder = write_world(tmp_path / "world", {k: v for k, v in frames.items() if k != "contracts"})
    nullable = pa.schema(
        [f.with_nullable(True) for f in CONTRACTS.arrow_schema()]
    )  # a file that allows what the contract does not
    write_table(folder, CONTRACTS, frames[CONTRACTS.name], nullable)

    assert_refused(
        folder, CONTRACTS, "plan_id", "1 row", "null", "row 3", "customer_id=C003", "plan_id=null"
    )


def test_nan_in_a_money_column(tmp_path: Path) -> None:
    frames = valid_frames()
    folder = write_world(tmp_path / "world", frames)
    invoices = frames[INVOICES.name]
    invoices.loc[1, "amount_sek"] = float("nan")
    # Written without pandas' NaN-to-null conversion: a NaN that is not a null.
    arrays = {
        name: pa.array(invoices[name].tolist(), type=INVOICES.arrow_schema().field(name).type)
        for name in INVOICES.column_names
        if name != "amount_sek"
    }
    arrays["amount_sek"] = pa.array(invoices["amount_sek"].to_numpy(), from_pandas=False)
    pq.write_table(pa.table(arrays), folder / INVOICES.file_name)

    assert_refused(folder, INVOICES, "amount_sek", "not a finite number", "invoice_id=INV-0002")


# --- rows ----------------------------------------------------------------------------------------


def test_duplicate_key(tmp_path: Path) -> None:
    def twice(usage: pd.DataFrame) -> None:
        usage.loc[5, "month"] = _day("2026-09-01")  # the month of row 4

    folder = world_with(tmp_path, USAGE_MONTHLY, twice)

    assert_refused(
        folder,
        USAGE_MONTHLY,
        "customer_id, month",
        "2 rows share a key",
        "row 4: customer_id=C003, month=2026-09-01",
        "row 5: customer_id=C003, month=2026-09-01",
    )


def test_unknown_plan_id(tmp_path: Path) -> None:
    def unknown(contracts: pd.DataFrame) -> None:
        contracts.loc[2, "plan_id"] = "PLAN_GONE"

    folder = world_with(tmp_path, CONTRACTS, unknown)

    assert_refused(folder, CONTRACTS, "plan_id", "customer_id=C002", "plan_id=PLAN_GONE")


def test_an_addon_is_not_a_plan(tmp_path: Path) -> None:
    def addon(contracts: pd.DataFrame) -> None:
        contracts.loc[3, "plan_id"] = "ADDON_DATA_10GB"

    folder = world_with(tmp_path, CONTRACTS, addon)

    assert_refused(folder, CONTRACTS, "plan_id", "plan_id=ADDON_DATA_10GB", "PLAN_30GB, PLAN_5GB")


def test_unknown_offer_id(tmp_path: Path) -> None:
    def unknown(events: pd.DataFrame) -> None:
        events.loc[1, "offer_id"] = "ADDON_TELEPORT"

    folder = world_with(tmp_path, OFFER_EVENTS, unknown)

    assert_refused(folder, OFFER_EVENTS, "offer_id", "decision_id=D-1", "offer_id=ADDON_TELEPORT")


def test_unknown_customer(tmp_path: Path) -> None:
    def stranger(invoices: pd.DataFrame) -> None:
        invoices.loc[2, "customer_id"] = "C999"

    folder = world_with(tmp_path, INVOICES, stranger)

    message = assert_refused(folder, INVOICES, "customer_id", "invoice_id=INV-0003", "C999")
    assert "not in customers" in message


def test_dates_out_of_order(tmp_path: Path) -> None:
    def early(invoices: pd.DataFrame) -> None:
        invoices.loc[4, "due_date"] = _day("2026-09-01")

    folder = world_with(tmp_path, INVOICES, early)

    assert_refused(
        folder,
        INVOICES,
        "due_date",
        "before invoice_date",
        "invoice_id=INV-0005",
        "due_date=2026-09-01",
        "invoice_date=2026-09-30",
    )


def test_a_contract_that_ends_before_it_starts(tmp_path: Path) -> None:
    def backwards(contracts: pd.DataFrame) -> None:
        contracts.loc[0, "valid_to"] = _day("2018-12-31")

    folder = world_with(tmp_path, CONTRACTS, backwards)

    assert_refused(folder, CONTRACTS, "valid_to", "before valid_from", "valid_to=2018-12-31")


def test_an_outcome_before_the_offer_was_shown(tmp_path: Path) -> None:
    def answered_early(events: pd.DataFrame) -> None:
        events.loc[2, "outcome_at"] = _utc("2026-10-31 23:00")

    folder = world_with(tmp_path, OFFER_EVENTS, answered_early)

    assert_refused(folder, OFFER_EVENTS, "outcome_at", "before shown_at", "decision_id=D-2")


def test_overlapping_contracts(tmp_path: Path) -> None:
    def overlap(contracts: pd.DataFrame) -> None:
        contracts.loc[0, "valid_to"] = _day("2024-03-15")  # the next one started 2024-02-01

    folder = world_with(tmp_path, CONTRACTS, overlap)

    assert_refused(
        folder,
        CONTRACTS,
        "valid_from",
        "overlap",
        "row 0: customer_id=C001, valid_from=2019-03-04",
        "row 1: customer_id=C001, valid_from=2024-02-01",
    )


def test_a_contract_after_a_current_one_overlaps_it(tmp_path: Path) -> None:
    def second_current(contracts: pd.DataFrame) -> None:
        contracts.loc[len(contracts)] = ["C002", "PLAN_30GB", _day("2025-01-01"), None, None, 299.0]

    folder = world_with(tmp_path, CONTRACTS, second_current)

    assert_refused(folder, CONTRACTS, "valid_from", "overlap", "customer_id=C002")


def test_negative_usage(tmp_path: Path) -> None:
    def negative(usage: pd.DataFrame) -> None:
        usage.loc[2, "voice_minutes"] = -30.0

    folder = world_with(tmp_path, USAGE_MONTHLY, negative)

    assert_refused(
        folder,
        USAGE_MONTHLY,
        "voice_minutes",
        "negative",
        "customer_id=C002, month=2026-09-01, voice_minutes=-30.0",
    )


def test_negative_money(tmp_path: Path) -> None:
    def refund(invoices: pd.DataFrame) -> None:
        invoices.loc[0, "invoice_fee_sek"] = -29.0

    folder = world_with(tmp_path, INVOICES, refund)

    assert_refused(folder, INVOICES, "invoice_fee_sek", "negative", "invoice_id=INV-0001")


def test_bad_enumeration(tmp_path: Path) -> None:
    def private(customers: pd.DataFrame) -> None:
        customers.loc[1, "segment"] = "private"

    folder = world_with(tmp_path, CUSTOMERS, private)

    assert_refused(
        folder, CUSTOMERS, "segment", "consumer, business", "customer_id=C002", "segment=private"
    )


def test_bad_outcome_and_purpose_are_both_reported(tmp_path: Path) -> None:
    frames = valid_frames()
    frames[OFFER_EVENTS.name].loc[0, "outcome"] = "bought"
    frames[CONSENTS.name].loc[4, "purpose"] = "newsletter"
    folder = write_world(tmp_path / "world", frames)

    message = refusal(folder)

    assert "in 2 places" in message
    assert "consents.parquet, column purpose" in message
    assert "purpose=newsletter" in message
    assert "offer_events.parquet, column outcome" in message
    assert "outcome=bought" in message


def test_satisfaction_outside_one_to_five(tmp_path: Path) -> None:
    def six(customers: pd.DataFrame) -> None:
        customers.loc[2, "satisfaction"] = 6

    folder = world_with(tmp_path, CUSTOMERS, six)

    assert_refused(folder, CUSTOMERS, "satisfaction", "1–5", "customer_id=C003", "satisfaction=6")


def test_month_not_the_first_day(tmp_path: Path) -> None:
    def mid_month(usage: pd.DataFrame) -> None:
        usage.loc[1, "month"] = _day("2026-10-15")

    folder = world_with(tmp_path, USAGE_MONTHLY, mid_month)

    assert_refused(folder, USAGE_MONTHLY, "month", "first day", "month=2026-10-15")


@pytest.mark.parametrize("propensity", [0.0, 1.5, -0.2])
def test_propensity_out_of_range(tmp_path: Path, propensity: float) -> None:
    def bad(events: pd.DataFrame) -> None:
        events.loc[1, "propensity"] = propensity

    folder = world_with(tmp_path, OFFER_EVENTS, bad)

    assert_refused(
        folder,
        OFFER_EVENTS,
        "propensity",
        "outside (0, 1]",
        "decision_id=D-1, offer_id=ADDON_DATA_10GB",
        f"propensity={propensity}",
    )


def test_rank_below_one(tmp_path: Path) -> None:
    def zero(events: pd.DataFrame) -> None:
        events.loc[2, "rank"] = 0

    folder = world_with(tmp_path, OFFER_EVENTS, zero)

    assert_refused(folder, OFFER_EVENTS, "rank", "below 1", "decision_id=D-2", "rank=0")


def test_at_most_five_example_rows(tmp_path: Path) -> None:
    def all_negative(usage: pd.DataFrame) -> None:
        usage["overage_sek"] = -1.0

    folder = world_with(tmp_path, USAGE_MONTHLY, all_negative)

    message = assert_refused(folder, USAGE_MONTHLY, "overage_sek", "6 rows with a negative value")
    assert message.count("row ") == 5


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The ``offers`` app with a catalog in tmp_path and a console wide enough not to wrap."""
    from core.settings import get_settings
    from pipelines import cli as cli_module

    catalog = tmp_path / "offers.yaml"
    catalog.write_text(CATALOG_YAML, encoding="utf-8")
    monkeypatch.setenv("OFFERS_CATALOG", str(catalog))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr(cli_module, "console", Console(stderr=True, width=1000))
    get_settings.cache_clear()
    yield cli_module.app
    get_settings.cache_clear()


def test_offers_validate_accepts_valid_data(cli, tmp_path: Path) -> None:
    folder = write_world(tmp_path / "world")

    result = CliRunner().invoke(cli, ["validate", "--data", str(folder)])

    assert result.exit_code == 0, result.output
    assert "6 tables match docs/data-contract.md" in result.output


def test_offers_validate_refuses_bad_data_with_the_message(cli, tmp_path: Path) -> None:
    def negative(usage: pd.DataFrame) -> None:
        usage.loc[2, "data_gb"] = -1.0

    folder = world_with(tmp_path, USAGE_MONTHLY, negative)

    result = CliRunner().invoke(cli, ["validate", "--data", str(folder)])

    assert result.exit_code == 1
    assert "usage_monthly.parquet, column data_gb" in result.output
    assert "customer_id=C002" in result.output
    assert "data_gb=-1.0" in result.output
