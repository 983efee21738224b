"""``offers experiments create|list|stop|report`` on a decision log of their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from pipelines.cli import app
from serving.decision_log import DecisionLog
from tests.factories.api import log_decision

EXPERIMENT = {
    "key": "ranker-vs-rules",
    "description": "Does the ranker beat the rules?",
    "variants": [
        {"name": "treatment", "weight": 0.5, "policy": "model"},
        {"name": "rules", "weight": 0.5, "policy": "rules"},
    ],
    "start": "2026-01-01T00:00:00Z",
    "end": "2027-02-28T23:59:59Z",
    "planned_customers": 100,
}


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """OFFERS_DATABASE_URL of an empty decision log, no contracts table in OFFERS_DATA_DIR, an
    empty model registry."""
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    monkeypatch.setenv("OFFERS_DATABASE_URL", url)
    monkeypatch.setenv("OFFERS_DATA_DIR", str(tmp_path / "raw"))
    # An empty registry of its own: a model:<version> variant is looked up there.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("OFFERS_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("COLUMNS", "250")  # a terminal wide enough for every column
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def run(*arguments: str) -> Any:
    return CliRunner().invoke(app, ["experiments", *arguments])


def test_create_from_a_file_then_list_it(database: str, tmp_path: Path) -> None:
    file = tmp_path / "exp.json"
    file.write_text(json.dumps(EXPERIMENT))
    created = run("create", "--file", str(file))
    assert created.exit_code == 0, created.output
    assert "created ranker-vs-rules in layer default" in created.output

    listed = run("list", "--json")
    assert listed.exit_code == 0, listed.output
    [experiment] = json.loads(listed.stdout)
    assert experiment["key"] == "ranker-vs-rules" and experiment["layer"] == "default"
    assert experiment["start"] == "2026-01-01T00:00:00Z" and experiment["stopped_at"] is None
    assert experiment["planned_customers"] == 100
    table = run("list")
    assert table.exit_code == 0 and "ranker-vs-rules" in table.stdout


def test_create_from_flags_is_checked_as_the_api_checks(database: str) -> None:
    flags = ["create", "--key", "by-flags", "--start", "2026-01-01", "--end", "2026-06-30"]
    created = run(*flags, "--variant", "a:0.5:model", "--variant", "b:0.5:holdout", "--layer", "l2")
    assert created.exit_code == 0, created.output
    assert "created by-flags in layer l2" in created.output

    wrong = run(
        *flags, "--key", "bad-weights", "--variant", "a:0.5:model", "--variant", "b:0.4:rules"
    )
    assert wrong.exit_code == 1
    assert "variant weights must sum to 1, they sum to 0.9" in wrong.output
    # Same layer, overlapping period: refused naming the other.
    overlapping = run(*flags, "--key", "second", "--variant", "a:1:rules", "--layer", "l2")
    assert overlapping.exit_code == 1
    assert "experiment by-flags in layer l2 runs from 2026-01-01 00:00" in overlapping.output
    again = run(*flags, "--variant", "a:1:rules", "--layer", "l3")
    assert again.exit_code == 1 and "an experiment with key by-flags exists" in again.output
    unknown_model = run(
        *flags, "--key", "challenger", "--variant", "a:1:model:999", "--layer", "l4"
    )
    assert unknown_model.exit_code == 1
    assert "model:999: no such offer-ranker version can be served" in unknown_model.output


def test_stop_then_report(database: str, tmp_path: Path) -> None:
    file = tmp_path / "exp.json"
    file.write_text(json.dumps(EXPERIMENT))
    assert run("create", "--file", str(file)).exit_code == 0
    log = DecisionLog(database)
    for customer in range(6):
        log_decision(log, "treatment", f"T{customer}", accepted=customer < 3)
        log_decision(log, "rules", f"R{customer}", accepted=customer < 1)
    log.close()

    stopped = run("stop", "ranker-vs-rules")
    assert stopped.exit_code == 0, stopped.output
    assert "ranker-vs-rules stopped at" in stopped.output
    assert run("stop", "nope").exit_code == 1

    as_json = run("report", "ranker-vs-rules", "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["status"] == "stopped" and report["control"] == "treatment"
    rows = {row["name"]: row for row in report["variants"]}
    assert rows["treatment"]["acceptance_rate"] == 0.5 and rows["rules"]["customers"] == 6
    assert rows["rules"]["difference"]["value"] == pytest.approx(1 / 6 - 1 / 2)
    assert report["warnings"][0].startswith("Stopped at ")
    assert report["warnings"][1].startswith("Read before the planned sample: 12 of 100")

    table = run("report", "ranker-vs-rules")
    assert table.exit_code == 0, table.output
    assert "warning: Read before the planned sample" in table.stdout
    assert "50.0 %" in table.stdout and "acceptance_rate" in table.stdout
    # 6 customers a side, one decision each: Var 6/5 · 1.5/36 = 0.05 and 6/5 · (30/36)/36 =
    # 0.02778, so (z₀.₉₇₅ + z₀.₈) · √0.07778 = 2.801585 · 0.278887 = 78.1 pp.
    assert (
        "Minimum detectable effect on the acceptance rate (80 % power, α 0.05): rules 78.1 pp"
        in table.stdout
    )
    # Over time: one invoice date (5 December), each variant's rate and its difference.
    assert report["cumulative"]["series"][1]["points"][0]["through"] == "2026-12-05"
    words = " ".join(table.stdout.split())  # the title wraps over the narrow table
    assert "Cumulative acceptance by invoice date, against treatment" in words
    # The table's row for that date (the title and the stop warning name today's date, which
    # may be the same day).
    (line,) = [t for t in table.stdout.splitlines() if t.startswith("│ 2026-12-05")]
    assert "50.0 %" in line and "16.7 % (-33.3 pp)" in line
    missing = run("report", "nope")
    assert missing.exit_code == 1 and "no experiment with key 'nope'" in missing.output
