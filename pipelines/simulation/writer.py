"""Writing the simulated tables: exact contract schemas, and all files or none.

Tables are written into a temporary folder beside the output folder and moved in only when every
table is complete, so a failure leaves the output folder as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import Table

logger = logging.getLogger(__name__)

ColumnValues: TypeAlias = np.ndarray | pa.Array


def arrow_table(table: Table, columns: Mapping[str, ColumnValues]) -> pa.Table:
    """The columns as an Arrow table with exactly ``table``'s schema.

    NaT and NaN become null; a null in a column the contract does not allow is an error.
    """
    schema = table.arrow_schema()
    arrays = []
    for field in schema:
        values = columns[field.name]
        if isinstance(values, pa.Array | pa.ChunkedArray):
            array = values.cast(field.type)
        else:
            array = pa.array(values, type=field.type, from_pandas=True)
        if not field.nullable and array.null_count:
            raise ValueError(
                f"{table.name}.{field.name}: {array.null_count} nulls where none is allowed"
            )
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


class OutputFolder:
    """A context manager: write tables inside it; they land in ``out`` only if it exits cleanly."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._staging: Path | None = None
        self._writers: dict[Path, pq.ParquetWriter] = {}
        self.row_counts: dict[str, int] = {}

    def __enter__(self) -> OutputFolder:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(
            tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent)
        )
        return self

    @property
    def staging(self) -> Path:
        if self._staging is None:
            raise RuntimeError("OutputFolder is used outside its with-block")
        return self._staging

    def _path(self, table: Table, folder: str | None) -> Path:
        directory = self.staging / folder if folder else self.staging
        directory.mkdir(exist_ok=True)
        return directory / table.file_name

    def open(self, table: Table, folder: str | None = None) -> pq.ParquetWriter:
        """The table's file, created now (so it exists even if no row comes)."""
        path = self._path(table, folder)
        writer = self._writers.get(path)
        if writer is None:
            writer = pq.ParquetWriter(path, table.arrow_schema())
            self._writers[path] = writer
            self.row_counts.setdefault(table.name, 0)
        return writer

    def write(
        self, table: Table, columns: Mapping[str, ColumnValues], folder: str | None = None
    ) -> None:
        """Add rows to a table; each call adds one row group."""
        data = arrow_table(table, columns)
        self.open(table, folder).write_table(data)
        self.row_counts[table.name] += data.num_rows

    def write_text(self, name: str, text: str) -> None:
        (self.staging / name).write_text(text, encoding="utf-8")

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        staging = self.staging
        try:
            self._close_writers()
            if kind is None:
                self._move_in(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self._staging = None

    def _move_in(self, staging: Path) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            target = self.out / item.name
            if item.is_dir() and target.exists():
                # A sub-folder is replaced whole, so no file of an older world stays in it.
                shutil.rmtree(target)
            os.replace(item, target)
        logger.info("wrote %s", self.out)
