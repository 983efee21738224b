"""The pages in a real browser: Debian's Chromium driven by Playwright against the app served by
uvicorn over HTTP. Signing in through the form, the experiment page against its JSON report, the
invoice preview against the API's answer. Screenshots go to ``test-artifacts/`` (or
``OFFERS_TEST_ARTIFACTS``); the path is printed.

Without Chromium or Playwright the tests skip with the reason, unless ``OFFERS_REQUIRE_SERVICES=1``
(as CI sets: ``.ci/run`` installs both), where they fail instead (the fixtures are in conftest).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from serving.sign_in_throttle import SignInThrottle
from tests.factories.api import KEYS, auth, log_decision, make_app, offers_body

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("OFFERS_TEST_ARTIFACTS", REPOSITORY / "test-artifacts"))
EXPERIMENT = {
    "key": "ranker-vs-rules",
    "description": "Does the ranker beat the rules?",
    "variants": [
        {"name": "treatment", "weight": 0.5, "policy": "model"},
        {"name": "control", "weight": 0.5, "policy": "holdout"},
    ],
    "start": "2026-12-01T00:00:00Z",
    "end": "2027-02-28T23:59:59Z",
}


@dataclass
class Served:
    app: FastAPI
    base_url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app (a few customers, tiny models) served by uvicorn on a port of its own."""
    app = make_app(tmp_path_factory.mktemp("browser"))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Served(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Tab:
    page: Any
    problems: list[str]


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """A fresh browser context (no cookies) and a page that records console errors and failed
    requests for other sites' assets."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith("http://127.0.0.1")
            else problems.append(f"asked another site: {request.url}")
        ),
    )
    try:
        yield Tab(page, problems)
    finally:
        context.close()


def screenshot(page: Any, name: str, part: Any = None) -> Path:
    """The whole page, or only ``part`` (a locator), saved as an artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    if part is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        part.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def sign_in_through_the_form(tab: Tab, served: Served, page_path: str, role: str) -> None:
    """Open a page signed out, be sent to the form, enter the key, and land on the page."""
    page = tab.page
    page.goto(served.base_url + page_path)
    assert page.url.startswith(f"{served.base_url}/sign-in?next=")
    page.fill("#key", KEYS[role])
    page.click("#sign-in button[type=submit]")
    page.wait_for_load_state()
    assert page.url == served.base_url + page_path


def test_signed_in_through_the_form_the_experiment_page_shows_the_report(
    tab: Tab, served: Served
) -> None:
    marketing = auth("marketing")
    with httpx.Client(base_url=served.base_url, headers=marketing) as api:
        if api.get("/v1/experiments/ranker-vs-rules").status_code == 404:
            assert api.post("/v1/experiments", json=EXPERIMENT).status_code == 201
        log = served.app.state.services.log
        # More decisions than customers: some customers had two invoices in the experiment,
        # over three invoice dates (the cumulative charts' three points).
        for number in range(12):
            at = dt.datetime(2026, 12, 1 + number % 3, tzinfo=dt.UTC)
            log_decision(log, "treatment", f"T{number % 9}", accepted=number < 4, at=at)
        for number in range(7):
            at = dt.datetime(2026, 12, 1 + number % 3, tzinfo=dt.UTC)
            log_decision(log, "control", f"K{number % 5}", accepted=False, offers=0, at=at)
        report = api.get("/v1/experiments/ranker-vs-rules/report").json()

    sign_in_through_the_form(tab, served, "/experiments/ranker-vs-rules", "marketing")
    page = tab.page
    shot = screenshot(page, "experiment-page.png")
    assert shot.stat().st_size > 0
    assert tab.problems == []
    # Each variant's row shows the report's own counts, whatever else the page shows beside them.
    rows = page.locator("tr").all()
    cells_by_variant = {}
    for row in rows:
        cells = [" ".join(text.split()) for text in row.locator("th, td").all_inner_texts()]
        if cells and cells[0] in {variant["name"] for variant in report["variants"]}:
            cells_by_variant[cells[0]] = cells
    assert set(cells_by_variant) == {variant["name"] for variant in report["variants"]}
    counts = {v["name"]: (v["customers"], v["decisions"]) for v in report["variants"]}
    assert counts == {"treatment": (9, 12), "control": (5, 7)}
    for variant in report["variants"]:
        shown = cells_by_variant[variant["name"]]
        assert str(variant["customers"]) in shown, (variant["name"], shown)
        assert str(variant["decisions"]) in shown, (variant["name"], shown)

    _the_charts_show_the_report(page, report)
    charts = page.locator("#cumulative-chart, #difference-chart")
    assert charts.count() == 2
    screenshot(page, "experiment-charts.png", page.locator("#chart-figures"))
    assert tab.problems == []

    # The session is the browser's only: scripts cannot read it, and it opens no JSON route.
    assert page.evaluate("document.cookie") == ""
    from_the_browser = page.context.request.get(
        served.base_url + "/v1/experiments/ranker-vs-rules/report"
    )
    assert from_the_browser.status == 401


def _numbers(element: Any) -> tuple[float | None, ...]:
    """The numbers a chart's mark carries: its value and interval, as floats."""
    found = [element.get_attribute(f"data-{name}") for name in ("value", "low", "high")]
    return tuple(None if text is None else float(text) for text in found)


def _the_charts_show_the_report(page: Any, report: dict[str, Any]) -> None:
    """Every chart is drawn (an SVG of some size, a mark per number), and each mark's numbers
    and label are the JSON report's."""
    for chart in ("acceptance-chart", "click-chart", "cumulative-chart", "difference-chart"):
        box = page.locator(f"#{chart} svg").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 60, (chart, box)
        assert (page.locator(f"#{chart} svg > title").text_content() or "").strip() != ""
    for metric, chart in (("acceptance", "acceptance-chart"), ("click", "click-chart")):
        marks = page.locator(f"#{chart} g.mark").all()
        shown = {mark.get_attribute("data-variant"): _numbers(mark) for mark in marks}
        expected = {
            row["name"]: (
                row[f"{metric}_rate"],
                row[f"{metric}_interval"]["low"] if row[f"{metric}_interval"] else None,
                row[f"{metric}_interval"]["high"] if row[f"{metric}_interval"] else None,
            )
            for row in report["variants"]
        }
        assert shown == expected, metric
        # The label beside each mark reads the same numbers.
        treatment = page.locator(f"#{chart} g.mark[data-variant=treatment] text.value")
        label = treatment.text_content() or ""
        assert label.startswith(f"{100 * expected['treatment'][0]:.1f} %"), label
    series = {line["variant"]: line["points"] for line in report["cumulative"]["series"]}
    rates = {
        (point.get_attribute("data-variant"), point.get_attribute("data-through")): _numbers(point)
        for point in page.locator("#cumulative-chart circle.point").all()
    }
    assert rates == {
        (variant, point["through"]): (
            point["acceptance_rate"],
            point["interval"]["low"] if point["interval"] else None,
            point["interval"]["high"] if point["interval"] else None,
        )
        for variant, points in series.items()
        for point in points
    }
    assert len(rates) == 6  # two variants, three invoice dates
    differences = {
        (point.get_attribute("data-variant"), point.get_attribute("data-through")): _numbers(point)
        for point in page.locator("#difference-chart circle.point").all()
    }
    control = report["cumulative"]["control"]
    assert differences == {
        (variant, point["through"]): (
            point["difference"]["value"],
            point["difference"]["interval"]["low"],
            point["difference"]["interval"]["high"],
        )
        for variant, points in series.items()
        if variant != control
        for point in points
    }
    assert len(differences) == 3
    # The numbers are also text: the table under the charts, a row per date and variant.
    last = series["treatment"][-1]
    row = page.locator(f"#cumulative tr[data-variant=treatment][data-through='{last['through']}']")
    assert f"{100 * last['acceptance_rate']:.1f} %" in row.inner_text()


def _preview_shows(page: Any) -> dict[str, Any]:
    return {
        "source": page.get_attribute("#source", "data-source"),
        "offers": [
            element.get_attribute("data-offer-id")
            for element in page.locator("[data-offer-id]").all()
        ],
        "reasons": [" ".join(text.split()) for text in page.locator(".reason").all_inner_texts()],
        "period": page.inner_text("#usage-period").strip(),
    }


def _api_says(answer: dict[str, Any], source: str) -> dict[str, Any]:
    period = answer["usage_summary"]["period"]
    return {
        "source": source,
        "offers": [offer["offer_id"] for offer in answer["offers"]],
        "reasons": [
            " ".join(reason["text"].split())
            for offer in answer["offers"]
            for reason in offer["reasons"]
        ],
        "period": f"{period['start']} – {period['end']}",
    }


def test_the_preview_shows_the_invoice_as_the_api_answers_it(tab: Tab, served: Served) -> None:
    renderer = auth("renderer")
    with httpx.Client(base_url=served.base_url, headers=renderer) as api:
        decided = api.post(
            "/v1/offers", json=offers_body(invoice_id="INV-BROWSER-1", locale="en")
        ).json()
        dry = api.post(
            "/v1/offers",
            json=offers_body(invoice_id="INV-BROWSER-2", locale="en", dry_run=True),
        ).json()
    assert decided["offers"] and dry["offers"]

    sign_in_through_the_form(tab, served, "/preview/invoices/INV-BROWSER-1?locale=en", "renderer")
    page = tab.page
    assert _preview_shows(page) == _api_says(decided, "stored")
    assert decided["decision_id"] in page.inner_text("#source")
    screenshot(page, "invoice-preview-stored.png")

    query = "customer_id=C0001&invoice_date=2026-11-30&locale=en"
    page.goto(f"{served.base_url}/preview/invoices/INV-BROWSER-2?{query}")
    assert _preview_shows(page) == _api_says(dry, "dry-run")
    assert "Dry run" in page.inner_text("#source")
    for charge in dry["usage_summary"]["extra_charges"]:
        assert charge["explanation"] in page.inner_text("#extra-charges")
    screenshot(page, "invoice-preview.png")
    assert tab.problems == []
    assert served.app.state.services.log.find("INV-BROWSER-2") is None


def test_signing_out_closes_the_pages(tab: Tab, served: Served) -> None:
    page = tab.page
    page.goto(served.base_url + "/sign-in")
    page.fill("#key", KEYS["marketing"])
    page.click("#sign-in button[type=submit]")
    page.wait_for_load_state()
    assert "Signed in with a marketing key." in page.inner_text("#signed-in")
    page.click("form[action='/sign-out'] button")
    page.wait_for_load_state()
    page.goto(served.base_url + "/experiments/ranker-vs-rules")
    assert page.url.startswith(f"{served.base_url}/sign-in?next=")
    assert tab.problems == []


def test_a_wrong_key_in_the_form_shows_the_form_again(tab: Tab, served: Served) -> None:
    page = tab.page
    page.goto(served.base_url + "/experiments/ranker-vs-rules")
    wrong = "not-a-key-of-this-api-0123456789"
    page.fill("#key", wrong)
    with page.expect_response(served.base_url + "/sign-in") as posted:
        page.click("#sign-in button[type=submit]")
    assert posted.value.status == 401
    assert page.inner_text("#sign-in-error") == "That key is not known."
    assert wrong not in page.content()
    assert page.input_value("#key") == ""
    assert page.context.cookies() == []
    screenshot(page, "sign-in-wrong-key.png")
    # The form still knows where to go: the right key now opens the page asked for first.
    page.fill("#key", KEYS["marketing"])
    page.click("#sign-in button[type=submit]")
    page.wait_for_load_state()
    assert page.url == served.base_url + "/experiments/ranker-vs-rules"


def test_the_form_says_plainly_when_an_address_has_failed_too_often(
    tab: Tab, served: Served
) -> None:
    services = served.app.state.services
    kept = services.sign_ins
    services.sign_ins = SignInThrottle(2, 300)  # this test's own count, not the module's
    try:
        page = tab.page
        page.goto(served.base_url + "/sign-in")
        statuses = []
        for number in range(3):
            page.fill("#key", f"not-a-key-of-this-api-{number}")
            with page.expect_response(served.base_url + "/sign-in") as posted:
                page.click("#sign-in button[type=submit]")
            statuses.append(posted.value.status)
        assert statuses == [401, 401, 429]
        assert posted.value.headers["retry-after"] == "300"
        assert page.inner_text("#sign-in-error") == (
            "Too many failed sign-ins from your address. Try again in 5 minutes."
        )
        screenshot(page, "sign-in-too-many.png")
        # The right key is refused alike while the address is held back.
        page.fill("#key", KEYS["marketing"])
        with page.expect_response(served.base_url + "/sign-in") as posted:
            page.click("#sign-in button[type=submit]")
        assert posted.value.status == 429
        assert page.context.cookies() == []
        # The browser notes each refused form post, and nothing else went wrong.
        status = "Failed to load resource: the server responded with a status of {}"
        expected = [
            *[status.format("401 (Unauthorized)")] * 2,
            *[status.format("429 (Too Many Requests)")] * 2,
        ]
        # The browser reports the last refusal on its console a moment after the response.
        waited = 0
        while len(tab.problems) < len(expected) and waited < 5_000:
            page.wait_for_timeout(50)
            waited += 50
        assert tab.problems == expected
    finally:
        services.sign_ins = kept
