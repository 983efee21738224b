"""The decision log write benchmark writes every decision both ways and reports each round."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from benchmarks import log_writes


def test_both_ways_write_every_decision_with_their_ids_and_time_each_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: dict[str, Any] = {}
    monkeypatch.setattr(log_writes, "WORK", tmp_path / "work")
    monkeypatch.setattr(log_writes, "BLOCK", 3_000)
    monkeypatch.setattr(log_writes, "QUICK_DECISIONS", 7_000)
    monkeypatch.setattr(
        log_writes, "write_result", lambda name, figures: written.update(name=name, **figures)
    )
    # Keep the two logs to read them afterwards.
    monkeypatch.setattr(log_writes.shutil, "rmtree", lambda *args, **kwargs: None)

    figures = log_writes.run(quick=True)

    assert written["name"] == "log_writes_quick"
    for way in ("hashed", "run_order"):
        with sqlite3.connect(tmp_path / "work" / way / "offers.db") as database:
            stored = [row[0] for row in database.execute("SELECT decision_id FROM decisions")]
            offers = database.execute("SELECT count(*) FROM decision_offers").fetchone()[0]
        assert sorted(stored) == sorted(log_writes._ids(way, 7_000))
        assert offers == 3 * 7_000
        rounds = figures["microseconds_per_decision_by_round"][way]
        assert len(rounds) == 3 and all(value > 0 for value in rounds)
    # The run's ids sort in the order they were written; hashed ones do not.
    assert log_writes._ids("run_order", 7_000) == sorted(log_writes._ids("run_order", 7_000))
    assert log_writes._ids("hashed", 7_000) != sorted(log_writes._ids("hashed", 7_000))
    seconds = figures["seconds"]
    assert figures["hashed_over_run_order"] == pytest.approx(
        seconds["hashed"] / seconds["run_order"], rel=0.05
    )
