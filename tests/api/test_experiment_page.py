"""The experiment page as a browser shows it: a readable table and charts, without any script.

Chromium comes from the ``chromium_path`` fixture (tests/api/conftest.py): missing, the test
skips, or fails under ``OFFERS_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import missing
from tests.factories.api import auth, log_decision, make_app, running

pytestmark = pytest.mark.integration

EXPERIMENT = {
    "key": "ranker-vs-rules",
    "description": "Does the ranker beat the rules?",
    "variants": [
        {"name": "treatment", "weight": 0.5, "policy": "model"},
        {"name": "control", "weight": 0.5, "policy": "holdout"},
    ],
    "start": "2026-12-01T00:00:00Z",
    "end": "2027-02-28T23:59:59Z",
    "control": "control",
}


class _Table(HTMLParser):
    """The text of every cell of the table with id ``report``, row by row, and any script."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.scripts = 0
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        if tag == "table" and ("id", "report") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag in {"td", "th"} and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.browser
def test_the_page_shows_the_report_as_a_table_in_a_browser(
    tmp_path: Path, chromium_path: str
) -> None:
    marketing = auth("marketing")
    app = make_app(tmp_path)
    with running(app) as client:
        client.post("/v1/experiments", json=EXPERIMENT, headers=marketing)
        log = app.state.services.log
        for i in range(20):
            log_decision(log, "treatment", f"T{i}", accepted=i < 6)
        for i in range(10):
            log_decision(log, "control", f"K{i}", accepted=False, offers=0)
        page = client.get("/experiments/ranker-vs-rules", headers=marketing)
    assert page.status_code == 200
    # The browser is given the page as served: it cannot send the Bearer key itself.
    saved = tmp_path / "experiment.html"
    saved.write_bytes(page.content)
    dumped = subprocess.run(
        [
            chromium_path,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            saved.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    table = _Table()
    table.feed(dumped)
    assert table.scripts == 0
    header, *rows = table.rows
    assert header[:3] == ["Variant", "Policy", "Weight"]
    by_name: dict[str, Any] = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert list(by_name) == ["treatment", "control"]
    treatment = by_name["treatment"]
    assert (treatment["Decisions"], treatment["Accepted"]) == ("20", "6")
    assert treatment["Acceptance rate"] == "30.0 %"
    # The difference's interval (the last column): 20 customers, one decision each, 6 accepted:
    # Var = 20/19 · (6 · 0.7² + 14 · 0.3²) / 20² = 0.011053; the holdout adds nothing, so
    # 0.3 ± 1.96 · 0.105131.
    assert treatment["Interval"] == "+9.4 to +50.6 pp"
    assert by_name["control"]["Acceptance rate"] == "0.0 %"
    # The charts are in the page as served, drawn without a script: the acceptance chart's mark
    # of the treatment carries its rate and interval.
    assert dumped.count("<svg") == 4
    assert 'data-variant="treatment" data-metric="acceptance_rate" data-value="0.3"' in dumped


def test_a_missing_browser_fails_the_run_when_ci_requires_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFFERS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="OFFERS_REQUIRE_SERVICES=1"):
        missing("chromium is not installed")
    monkeypatch.delenv("OFFERS_REQUIRE_SERVICES")
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        missing("chromium is not installed")
