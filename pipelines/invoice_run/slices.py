"""An invoice run in slices that resume: bounded memory, and no finished slice decided twice.

The billing date's invoices, in output order (customer, then invoice id), are cut into slices of
at most ``OFFERS_INVOICE_RUN_SLICE_INVOICES`` invoices; a customer's invoices stay in one slice.
Each slice is decided on its own, and its rows are written atomically (a temporary file, fsynced,
then renamed) to a folder beside the output, ``.<out>.slices/``. A small manifest there, replaced
atomically after each slice, names the run and its finished slices. When every slice is written,
the slices are streamed into the output file (itself replaced atomically) and the folder removed.

A run stopped at any moment (``kill -9`` included) and started again with the same inputs reads
the manifest, skips the finished slices and decides the rest as of the same moment as the first
start, so the output is the one an uninterrupted run writes. A manifest of another run (other
invoices, date, options, models or feature tables) is discarded and the run starts over.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.columns import CUSTOMER_KEY
from core.files import replacing
from pipelines.invoice_run.core import WrittenDecisions, decision_table, write_decisions

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SliceOutcome:
    """One slice's output rows (``ROW_COLUMNS``, by customer and invoice id) and what the
    decision log holds of them (zero with ``--no-log``)."""

    rows: pd.DataFrame
    written: int = 0  # decisions new to the log
    replayed: int = 0  # invoices the log already held a decision for
    conflicts: int = 0  # invoices the log holds for another customer: no row


@dataclass
class SlicedRun:
    """What a sliced run did, over every slice (also those finished by an earlier start)."""

    written: WrittenDecisions
    slices: int
    resumed: int  # slices finished by an earlier start, not decided again
    features_as_of: dt.datetime
    logged: int = 0
    replayed: int = 0
    conflicts: int = 0


def slice_bounds(customers: pd.Series, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` positions of slices of at most ``size`` rows of invoices sorted by
    customer, each boundary moved forward past the customer it would split (a customer with more
    invoices than ``size`` makes a longer slice)."""
    if size < 1:
        raise ValueError("a slice holds at least one invoice")
    values = customers.tolist()
    bounds = []
    start = 0
    while start < len(values):
        end = min(start + size, len(values))
        while end < len(values) and values[end] == values[end - 1]:
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def slices_folder(out: Path) -> Path:
    """Where the slices of a run writing ``out`` are kept until the output is written."""
    return Path(out).with_name(f".{Path(out).name}.slices")


def run_key(
    invoices: pd.DataFrame,
    *,
    size: int,
    settings: Mapping[str, Any],
    feature_files: Mapping[str, Path],
) -> str:
    """A digest of everything that makes a slice's rows what they are: the invoices in order, the
    slice size, the run's options and models, and the feature tables' sizes and times."""
    digest = hashlib.sha256()
    for invoice_id, customer_id in zip(invoices["invoice_id"], invoices[CUSTOMER_KEY], strict=True):
        digest.update(f"{invoice_id}\t{customer_id}\n".encode())
    files = {}
    for view, path in sorted(feature_files.items()):
        stat = Path(path).stat()
        files[view] = [stat.st_size, stat.st_mtime_ns]
    described = {"slice_invoices": size, "settings": dict(settings), "feature_files": files}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class SliceStore:
    """The slices folder of one output: finished slices and the manifest naming them."""

    def __init__(self, out: Path) -> None:
        self.folder = slices_folder(out)
        self.manifest_path = self.folder / MANIFEST
        self._manifest: dict[str, Any] = {}

    def path(self, index: int) -> Path:
        return self.folder / f"slice-{index:06d}.parquet"

    def resume(
        self, key: str, slices: int, features_as_of: dt.datetime
    ) -> tuple[dict[int, dict[str, int]], dt.datetime]:
        """The finished slices of this run (by index: their counts) and the moment its features
        are read as of. Another run's manifest, or none: a fresh start as of ``features_as_of``."""
        manifest = self._read()
        if (
            manifest is not None
            and manifest.get("version") == MANIFEST_VERSION
            and manifest.get("run") == key
            and manifest.get("slices") == slices
        ):
            finished = {
                int(index): counts
                for index, counts in manifest["finished"].items()
                if self.path(int(index)).exists()
            }
            moment = dt.datetime.fromisoformat(manifest["features_as_of"])
            if finished:
                logger.info("resuming: %d of %d slices finished earlier", len(finished), slices)
            return finished, moment
        if manifest is not None or self.folder.exists():
            logger.info("slices of another run found; starting over")
            shutil.rmtree(self.folder, ignore_errors=True)
        self._manifest = {
            "version": MANIFEST_VERSION,
            "run": key,
            "slices": slices,
            "features_as_of": features_as_of.isoformat(),
            "finished": {},
        }
        self._write_manifest()
        return {}, features_as_of

    def write(self, index: int, table: pa.Table) -> None:
        """Write a slice's rows under its name, atomically (only the manifest names it finished)."""
        self.adopt(index, self.write_unnamed(index, table))

    def write_unnamed(self, index: int, table: pa.Table) -> Path:
        """Write a slice's rows, fsynced, under a name of this process's own, for the run to
        :meth:`adopt`: a worker that outlives a killed run can then never replace a slice of the
        next start."""
        written = self.folder / f".{self.path(index).name}.{os.getpid()}.written"
        with replacing(written, durable=True) as (temporary,):
            pq.write_table(table, temporary)
        return written

    def adopt(self, index: int, written: Path) -> None:
        """Give a worker's file its slice's name (atomic)."""
        os.replace(written, self.path(index))

    def mark_finished(self, index: int, counts: Mapping[str, int]) -> None:
        """Name a written slice finished in the manifest, atomically."""
        finished: dict[str, Any] = self._manifest["finished"]
        finished[str(index)] = dict(counts)
        self._write_manifest()

    def tables(self, slices: int) -> Iterator[pa.Table]:
        """The finished slices' rows, in slice order, one slice in memory at a time."""
        for index in range(slices):
            yield pq.read_table(self.path(index))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _read(self) -> dict[str, Any] | None:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(manifest, dict):
            self._manifest = manifest
            return manifest
        return None

    def _write_manifest(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with replacing(self.manifest_path, durable=True) as (temporary,):
            temporary.write_text(json.dumps(self._manifest, indent=1), encoding="utf-8")


COUNTS = ("written", "replayed", "conflicts")


# What a worker process of a parallel run decides with: set before the workers fork, so that
# neither the decider (models, catalog, declines) nor the day's invoices are pickled per slice.
_WORK: _Slices
_WORK_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Slices:
    """Deciding one slice and writing its rows: in this process, or in a forked worker, which
    then hands back only its file and the slice's counts (not its rows)."""

    decide_slice: Callable[[pd.DataFrame, dt.datetime], SliceOutcome]
    invoices: pd.DataFrame
    moment: dt.datetime
    store: SliceStore
    day: dt.date

    def table_and_counts(self, bounds: tuple[int, int]) -> tuple[pa.Table, dict[str, int]]:
        start, end = bounds
        outcome = self.decide_slice(
            self.invoices.iloc[start:end].reset_index(drop=True), self.moment
        )
        counts = {name: int(getattr(outcome, name)) for name in COUNTS}
        return decision_table(outcome.rows, self.day), counts

    def decide_and_write(self, index: int, bounds: tuple[int, int]) -> dict[str, int]:
        table, counts = self.table_and_counts(bounds)
        self.store.write(index, table)
        return counts


# prctl(2): the signal a process gets when the thread that forked it ends (Linux).
PR_SET_PDEATHSIG = 1


def _die_with_run(run: int) -> None:
    """A worker's start: it is killed when the run that forked it ends, ``kill -9`` included
    (Linux). Left behind, it would go on deciding the slices queued for it, in a logged run
    writing their decisions while a restarted run decides the same slices."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != run:  # the run ended before the line above
        os._exit(1)


def _decide_forked(index: int, bounds: tuple[int, int], run: int) -> tuple[Path, dict[str, int]]:
    table, counts = _WORK.table_and_counts(bounds)
    if os.getppid() != run:  # the run that forked this worker is gone: nobody will adopt it
        raise RuntimeError("the invoice run this worker decided for has ended")
    return _WORK.store.write_unnamed(index, table), counts


def _finished(
    pending: list[tuple[int, tuple[int, int]]], work: _Slices, workers: int
) -> Iterator[tuple[int, dict[str, int]]]:
    """Each pending slice decided and written, with its counts, in slice order; in ``workers``
    forked processes when more than one (each writing its slice under a name of its own, which
    this process gives the slice's name), at most two slices a worker decided ahead of the one
    marked finished."""
    if workers <= 1 or len(pending) <= 1:
        for index, bounds in pending:
            yield index, work.decide_and_write(index, bounds)
        return
    global _WORK
    with _WORK_LOCK:
        _WORK = work
        context = multiprocessing.get_context("fork")
        run = os.getpid()
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_die_with_run, initargs=(run,)
        ) as pool:
            waiting: deque[tuple[int, Future[tuple[Path, dict[str, int]]]]] = deque()
            queue = iter(pending)

            def submit(index: int, bounds: tuple[int, int]) -> None:
                waiting.append((index, pool.submit(_decide_forked, index, bounds, run)))

            for index, bounds in itertools.islice(queue, 2 * workers):
                submit(index, bounds)
            try:
                while waiting:
                    index, future = waiting.popleft()
                    written, counts = future.result()
                    work.store.adopt(index, written)
                    following = next(queue, None)
                    if following is not None:
                        submit(*following)
                    yield index, counts
            except BaseException:
                # The slices not started are not decided; those being decided end with the pool.
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def decide_in_slices(
    invoices: pd.DataFrame,
    *,
    day: dt.date,
    out: Path,
    size: int,
    key: str,
    features_as_of: dt.datetime,
    decide: Callable[[pd.DataFrame, dt.datetime], SliceOutcome],
    workers: int = 1,
) -> SlicedRun:
    """Decide ``invoices`` (sorted by customer and invoice id) slice after slice with
    ``decide(slice, features_as_of)``, resuming from the finished slices of an earlier start of
    the same run, then write ``out`` from the slices and remove them.

    ``workers`` above one: slices are decided in that many processes forked from this one, each
    writing its slice's file; this process names them finished in the manifest, in slice order.
    A ``decide`` that writes elsewhere (the decision log) opens its own connections in each
    worker, and must not need another slice's writes: a customer's invoices are in one slice.
    """
    bounds = slice_bounds(invoices[CUSTOMER_KEY], size)
    store = SliceStore(out)
    finished, moment = store.resume(key, len(bounds), features_as_of)
    totals = dict.fromkeys(COUNTS, 0)
    for counts in finished.values():
        for name in COUNTS:
            totals[name] += int(counts.get(name, 0))
    pending = [(index, span) for index, span in enumerate(bounds) if index not in finished]
    work = _Slices(decide, invoices, moment, store, day)
    for index, counts in _finished(pending, work, workers):
        store.mark_finished(index, counts)
        for name in COUNTS:
            totals[name] += counts[name]
        start, end = bounds[index]
        logger.info("slice %d of %d: %d invoices decided", index + 1, len(bounds), end - start)
    written = write_decisions(store.tables(len(bounds)), day, out)
    store.remove()
    return SlicedRun(
        written=written,
        slices=len(bounds),
        resumed=len(finished),
        features_as_of=moment,
        logged=totals["written"],
        replayed=totals["replayed"],
        conflicts=totals["conflicts"],
    )
