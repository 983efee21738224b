"""Reading the input tables of docs/data-contract.md, the one way every stage reads them.

Each table is one Parquet file ``<data_dir>/<table>.parquet`` (a folder of Parquet parts under that
name, as Spark writes it, is read too). Only the contract's columns are read; extra columns are
ignored. The frames have the same dtypes whatever the file used:

- ``str``: ``object`` holding Python ``str`` (dictionary-encoded strings are decoded);
- ``int``: ``int64``, or pandas' nullable ``Int64`` for a nullable column (``satisfaction``); a
  floating-point column is accepted when every value is a whole number (what pandas writes for an
  integer column with nulls), and refused naming the column when one is not;
- ``float``: ``float64`` (integer and decimal columns are accepted and converted);
- ``bool``: ``bool``;
- ``date``: ``datetime64[ns]``, naive and normalised to midnight, ``NaT`` for null. A file may store
  a date as Parquet ``date32``/``date64`` or as a timestamp whose every value is at midnight UTC
  (what ``DataFrame.to_parquet`` writes for a ``datetime64`` column); a time of day is refused;
- ``timestamp``: ``datetime64[ns, UTC]``. A file may store any unit, with the time zone UTC or
  without a time zone (then the values are read as UTC); any other zone is refused.

A file that cannot be read this way raises :class:`ContractError`, whose message names the file,
the column and, where rows are at fault, up to five of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.contract import TABLES, Column, ColumnKind, Table

MAX_EXAMPLES = 5
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "Z", "+00:00", "GMT", "Etc/GMT", "Universal", "Zulu"})

# datetime64[ns] holds 1677-09-22 … 2262-04-11; a far-future sentinel like 9999-12-31 does not fit.
_NS_MIN = int(pd.Timestamp.min.value)
_NS_MAX = int(pd.Timestamp.max.value)
_NS_PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_NS_PER_DAY = 86_400 * 10**9

_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number (float or integer)",
    "bool": "a boolean",
    "date": "a date (date32, or a timestamp at midnight UTC)",
    "timestamp": "a timestamp in UTC (or without a time zone, read as UTC)",
}


@dataclass(frozen=True)
class Problem:
    """One way a file breaks the contract: where, what, and a few rows at fault."""

    file: Path
    column: str | None
    message: str
    examples: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.column is None:
            where = str(self.file)
        else:
            columns = "columns" if "," in self.column else "column"
            where = f"{self.file}, {columns} {self.column}"
        text = f"{where}: {self.message}"
        if self.examples:
            text += "; e.g. " + "; ".join(self.examples)
        return text


class ContractError(ValueError):
    """Input tables break docs/data-contract.md; the message names the file, column and rows."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = self.problems[0].describe()
        else:
            lines = "\n".join(f"- {problem.describe()}" for problem in self.problems)
            count = len(self.problems)
            message = f"the input tables break docs/data-contract.md in {count} places:\n{lines}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[ContractError], tuple[tuple[Problem, ...]]]:
        # Rebuild from the problems, not the message, when sent to another process.
        return (ContractError, (self.problems,))


def input_table_path(data_dir: Path, table: Table) -> Path:
    """The Parquet file (or folder of parts) of an input table under ``data_dir``."""
    return Path(data_dir) / table.file_name


def type_name(data_type: pa.DataType) -> str:
    """Arrow's type name without square brackets, which consoles take for markup."""
    return str(data_type).replace("[", "(").replace("]", ")")


def _is_string(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        return _is_string(data_type.value_type)
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    )


def _timestamp_zone_ok(data_type: pa.DataType) -> bool:
    return data_type.tz is None or data_type.tz in UTC_ZONES


def _type_fits(kind: ColumnKind, data_type: pa.DataType) -> bool:
    if pa.types.is_null(data_type):
        # An all-null column written from pandas has no type; the null check judges it.
        return True
    if kind == "str":
        return _is_string(data_type)
    if kind == "int":
        # Pandas holds an integer column with nulls as float64 and writes it so: a table read
        # into pandas and written back unchanged. Its values are cast safely, so a fraction is
        # refused there, naming the column.
        return bool(pa.types.is_integer(data_type) or pa.types.is_floating(data_type))
    if kind == "float":
        return bool(
            pa.types.is_floating(data_type)
            or pa.types.is_integer(data_type)
            or pa.types.is_decimal(data_type)
        )
    if kind == "bool":
        return bool(pa.types.is_boolean(data_type))
    if kind in ("date", "timestamp"):
        if pa.types.is_timestamp(data_type):
            return _timestamp_zone_ok(data_type)
        return kind == "date" and bool(pa.types.is_date(data_type))
    raise AssertionError(f"unknown column kind {kind}")


def _open(path: Path) -> ds.Dataset:
    return ds.dataset(path, format="parquet")


def schema_problems(data_dir: Path, table: Table) -> list[Problem]:
    """Problems seen without reading rows: no file, not Parquet, missing or mistyped columns."""
    path = input_table_path(data_dir, table)
    if not path.exists():
        return [Problem(path, None, f"file not found; the {table.name} table is required")]
    try:
        schema = _open(path).schema
    except (pa.ArrowException, OSError) as error:
        return [Problem(path, None, f"not a readable Parquet file ({_first_line(error)})")]
    problems: list[Problem] = []
    missing = [name for name in table.column_names if name not in schema.names]
    if missing:
        problems.append(
            Problem(
                path,
                ", ".join(missing),
                f"missing column{'s' if len(missing) > 1 else ''}; the file has "
                + ", ".join(schema.names),
            )
        )
    for column in table.columns:
        if column.name not in schema.names:
            continue
        data_type = schema.field(column.name).type
        if not _type_fits(column.kind, data_type):
            problems.append(
                Problem(
                    path,
                    column.name,
                    f"has type {type_name(data_type)}, expected {_EXPECTED[column.kind]}",
                )
            )
    return problems


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def row_examples(
    frame: pd.DataFrame, table: Table, mask: np.ndarray | pd.Series, columns: Iterable[str] = ()
) -> tuple[str, ...]:
    """Up to five rows where ``mask`` holds: row number, key values and the named columns."""
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))[:MAX_EXAMPLES]
    shown = list(dict.fromkeys([*table.key, *columns]))
    examples = []
    for position in positions:
        row = frame.iloc[int(position)]
        values = ", ".join(f"{name}={format_value(row[name])}" for name in shown)
        examples.append(f"row {int(position)}: {values}")
    return tuple(examples)


def format_value(value: object) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "null"
    if value is pd.NA:
        return "null"
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is None and value == value.normalize():
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, str):
        return value
    return str(value)


def _arrow_examples(
    arrow_table: pa.Table, table: Table, mask: np.ndarray, columns: Iterable[str] = ()
) -> tuple[str, ...]:
    """Like :func:`row_examples`, for rows that cannot become a frame (values shown as text)."""
    positions = np.flatnonzero(mask)[:MAX_EXAMPLES]
    shown = list(dict.fromkeys([*table.key, *columns]))
    rows = arrow_table.select(shown).take(pa.array(positions, pa.int64()))
    text = pa.table({name: pc.cast(rows.column(name), pa.string()) for name in shown}).to_pylist()
    return tuple(
        f"row {int(position)}: " + ", ".join(f"{name}={format_value(row[name])}" for name in shown)
        for position, row in zip(positions, text, strict=True)
    )


def _as_mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def _out_of_range(column: pa.ChunkedArray) -> np.ndarray | None:
    """Rows whose date or time does not fit ``datetime64[ns]``, or None when all fit."""
    data_type = column.type
    if pa.types.is_date32(data_type):
        scale, raw = _NS_PER_DAY, pc.cast(column, pa.int32()).cast(pa.int64())
    elif pa.types.is_date64(data_type):
        scale, raw = 10**6, pc.cast(column, pa.int64())
    elif pa.types.is_timestamp(data_type):
        scale, raw = _NS_PER_UNIT[data_type.unit], pc.cast(column, pa.int64())
    else:
        return None
    low, high = -(-_NS_MIN // scale), _NS_MAX // scale
    outside = pc.fill_null(pc.or_(pc.less(raw, low), pc.greater(raw, high)), False)
    mask = _as_mask(outside)
    return mask if mask.any() else None


def _target_type(column: Column) -> pa.DataType:
    if column.kind == "date":
        return pa.timestamp("ns")
    if column.kind == "timestamp":
        return pa.timestamp("ns", tz="UTC")
    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}[
        column.kind
    ]


def _column_problem(
    arrow_table: pa.Table, table: Table, column: Column, path: Path
) -> tuple[Problem | None, pa.ChunkedArray | None]:
    """Check one column's values at the Arrow level and cast it to its contract type."""
    values = arrow_table.column(column.name)
    if pa.types.is_dictionary(values.type):
        values = pc.cast(values, values.type.value_type)
    if not column.nullable and values.null_count:
        mask = _as_mask(pc.is_null(values))
        problem = Problem(
            path,
            column.name,
            f"{values.null_count} rows are null in a column that must always have a value",
            _arrow_examples(arrow_table, table, mask, [column.name]),
        )
        return problem, None
    if column.kind == "str" and _is_string(values.type):
        # Large strings stay as they are: they become Python str all the same.
        return None, values
    outside = _out_of_range(values)
    if outside is not None:
        problem = Problem(
            path,
            column.name,
            f"{int(outside.sum())} rows hold dates outside 1677-09-22…2262-04-11 "
            "(use null for an open end, not a far-future date)",
            _arrow_examples(arrow_table, table, outside, [column.name]),
        )
        return problem, None
    try:
        return None, pc.cast(values, _target_type(column), safe=True)
    except pa.ArrowInvalid as error:
        message = f"cannot be read as {column.kind}: {_first_line(error)}"
        return Problem(path, column.name, message), None


def _convert(arrow_table: pa.Table, table: Table, path: Path) -> pd.DataFrame:
    problems: list[Problem] = []
    arrays: dict[str, pa.ChunkedArray] = {}
    for column in table.columns:
        problem, values = _column_problem(arrow_table, table, column, path)
        if problem is not None:
            problems.append(problem)
        elif values is not None:
            arrays[column.name] = values
    if problems:
        raise ContractError(problems)

    frame = pa.table(arrays).to_pandas(
        date_as_object=False, coerce_temporal_nanoseconds=True, split_blocks=True
    )
    for column in table.columns:
        if column.kind == "int" and column.nullable:
            # Arrow would hand back float64 for an int column with nulls; keep it an integer.
            frame[column.name] = arrays[column.name].to_pandas(
                types_mapper={pa.int64(): pd.Int64Dtype()}.get
            )
        elif column.kind == "date":
            dates = frame[column.name]
            time_of_day = (dates != dates.dt.normalize()) & dates.notna()
            if time_of_day.any():
                problems.append(
                    Problem(
                        path,
                        column.name,
                        f"{int(time_of_day.sum())} rows hold a time of day in a date column",
                        row_examples(frame, table, time_of_day, [column.name]),
                    )
                )
    if problems:
        raise ContractError(problems)
    return frame


def read_table(
    data_dir: Path,
    table: Table,
    *,
    columns: Sequence[str] | None = None,
    rows: Callable[[pa.Table], pa.ChunkedArray | pa.Array] | None = None,
) -> pd.DataFrame:
    """The contract's columns of one table, with the dtypes described in this module's docstring.

    ``columns``: only these (and the table's key); ``rows``: a boolean mask over the Arrow table
    read, whose rows are kept before anything becomes Python objects (a few rows of a large table
    are read in a fraction of the time); only those rows are checked, and a problem's row numbers
    count them.

    Raises :class:`ContractError` when the file is missing, unreadable, lacks a column, holds a
    column of the wrong type or a null where the contract allows none. Row-level rules (keys,
    enumerations, ids) are checked by :func:`core.validation.validate_tables`.
    """
    problems = schema_problems(data_dir, table)
    if problems:
        raise ContractError(problems)
    path = input_table_path(data_dir, table)
    if columns is not None:
        unknown = sorted(set(columns) - set(table.column_names))
        if unknown:
            raise ValueError(f"the {table.name} table has no column {', '.join(unknown)}")
        wanted = set(columns) | set(table.key)
        table = replace(table, columns=tuple(c for c in table.columns if c.name in wanted))
    try:
        arrow_table = _open(path).to_table(columns=table.column_names)
    except (pa.ArrowException, OSError) as error:
        raise ContractError(
            [Problem(path, None, f"not a readable Parquet file ({_first_line(error)})")]
        ) from error
    if rows is not None:
        # The kept rows only are checked below, and their row numbers count kept rows.
        try:
            arrow_table = arrow_table.filter(rows(arrow_table))
        except pa.ArrowException as error:
            raise ContractError(
                [Problem(path, None, f"rows could not be picked ({_first_line(error)})")]
            ) from error
    # Pandas metadata in the file would restore its own index and dtypes; the contract decides here.
    return _convert(arrow_table.replace_schema_metadata(None), table, path)


def read_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Every input table by name; validate first with ``validation.require_valid``."""
    return {table.name: read_table(data_dir, table) for table in TABLES}
