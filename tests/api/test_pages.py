"""The pages' sign-in (a session cookie for browsers, never for JSON routes) and the invoice preview
(the stored decision replayed, or a dry run), as an HTTP client sees them."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from serving.api.deps import SESSION_COOKIE
from serving.api.routes.pages import _templates, preview_context, same_site_path
from serving.auth import ApiKeys, SessionTokens
from serving.offers_response import OffersResponse
from serving.sign_in_throttle import SignInThrottle
from tests.factories.api import KEYS, auth, offers_body

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
EXPERIMENT = {
    "key": "ranker-vs-rules",
    "variants": [
        {"name": "treatment", "weight": 0.5, "policy": "model"},
        {"name": "control", "weight": 0.5, "policy": "holdout"},
    ],
    "start": "2026-11-01T00:00:00Z",
    "end": "2026-12-31T23:59:59Z",
}


def sign_in(client: TestClient, role: str, next_path: str = "") -> Any:
    return client.post(
        "/sign-in", data={"key": KEYS[role], "next": next_path}, follow_redirects=False
    )


def set_cookie_of(response: Any) -> str:
    (header,) = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    return str(header)


# Signing in -------------------------------------------------------------------------------------


def test_the_sign_in_form_posts_the_key_and_the_page_to_return_to(client: TestClient) -> None:
    form = client.get("/sign-in", params={"next": "/experiments/ranker-vs-rules"})
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert form.headers["cache-control"] == "no-store"
    assert '<form method="post" action="/sign-in"' in form.text
    assert 'name="key"' in form.text
    assert '<input type="hidden" name="next" value="/experiments/ranker-vs-rules">' in form.text


def test_a_known_key_sets_a_strict_http_only_cookie_without_the_key(client: TestClient) -> None:
    signed_in = sign_in(client, "marketing", "/experiments/ranker-vs-rules?x=1")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/experiments/ranker-vs-rules?x=1"
    cookie = set_cookie_of(signed_in)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    token = client.cookies[SESSION_COOKIE]
    assert KEYS["marketing"] not in token
    # What the token says, read without the secret: an HMAC naming the key, not the key.
    _, payload = URLSafeTimedSerializer("not the server's secret").loads_unsafe(token)
    assert list(payload) == ["key"]
    assert re.fullmatch("[0-9a-f]{64}", payload["key"])
    assert KEYS["marketing"] not in str(payload)


def test_over_https_the_cookie_is_secure(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver") as secure_client:
        signed_in = sign_in(secure_client, "marketing")
    assert "secure" in {p.strip().lower() for p in set_cookie_of(signed_in).split(";")}


def test_a_wrong_key_shows_the_form_again_naming_no_part_of_it(client: TestClient) -> None:
    wrong = "wrong-key-abcdefghijklmnop"
    refused = client.post("/sign-in", data={"key": wrong, "next": "/experiments/x"})
    assert refused.status_code == 401
    assert "That key is not known." in refused.text
    assert wrong not in refused.text and "abcdefgh" not in refused.text
    assert '<input type="hidden" name="next" value="/experiments/x">' in refused.text
    assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    empty = client.post("/sign-in", data={"key": "  "})
    assert empty.status_code == 422
    assert "Enter your API key." in empty.text


@pytest.mark.parametrize(
    "next_path",
    [
        "https://elsewhere.example/",
        "//elsewhere.example/",
        "/\\elsewhere.example/",
        "javascript:alert(1)",
        "experiments/x",
        "/experiments/x\r\nSet-Cookie: a=b",
    ],
)
def test_sign_in_returns_only_to_a_path_on_this_site(client: TestClient, next_path: str) -> None:
    signed_in = sign_in(client, "marketing", next_path)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/sign-in"
    assert same_site_path(next_path) == "/sign-in"


def test_the_session_opens_pages_and_says_who_is_signed_in(client: TestClient) -> None:
    assert client.post("/v1/experiments", json=EXPERIMENT, headers=auth("marketing")).is_success
    sign_in(client, "marketing")
    page = client.get("/experiments/ranker-vs-rules", headers=BROWSER)
    assert page.status_code == 200 and "ranker-vs-rules" in page.text
    form = client.get("/sign-in")
    assert "Signed in with a <strong>marketing</strong> key." in form.text


def test_the_session_authorises_no_json_route(client: TestClient) -> None:
    assert client.post("/v1/experiments", json=EXPERIMENT, headers=auth("marketing")).is_success
    sign_in(client, "admin")
    assert client.get("/v1/experiments/ranker-vs-rules/report").status_code == 401
    other = {**EXPERIMENT, "key": "made-by-another-site"}
    assert client.post("/v1/experiments", json=other).status_code == 401
    assert client.post("/v1/offers", json=offers_body()).status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401


def test_a_browser_without_a_session_is_sent_to_sign_in_and_back(client: TestClient) -> None:
    page = client.get(
        "/preview/invoices/INV-1", params={"locale": "en"}, headers=BROWSER, follow_redirects=False
    )
    assert page.status_code == 303
    assert page.headers["location"] == "/sign-in?next=%2Fpreview%2Finvoices%2FINV-1%3Flocale%3Den"
    form = client.get(page.headers["location"])
    assert 'name="next" value="/preview/invoices/INV-1?locale=en"' in form.text
    # A script (no HTML asked for) gets the API's 401 problem instead.
    script = client.get("/preview/invoices/INV-1")
    assert script.status_code == 401
    assert script.headers["content-type"] == "application/problem+json"


def test_a_session_of_another_role_sees_what_the_page_needs(client: TestClient) -> None:
    sign_in(client, "renderer")
    page = client.get("/experiments/ranker-vs-rules", headers=BROWSER)
    assert page.status_code == 403
    assert "this page needs the marketing role; the key has renderer" in page.text
    sign_in(client, "consent")
    preview = client.get("/preview/invoices/INV-1", headers=BROWSER)
    assert preview.status_code == 403
    assert "needs the renderer or marketing role" in preview.text


def test_a_forged_or_expired_session_is_no_session(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(client, "marketing")
    token = client.cookies[SESSION_COOKIE]
    signed, _, signature = token.rpartition(".")
    forged = f"{signed}.{'A' * len(signature)}"
    client.cookies.set(SESSION_COOKIE, forged)
    assert client.get("/experiments/ranker-vs-rules").status_code == 401

    nine_hours_ago = int(time.time()) - 9 * 3600
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: nine_hours_ago)
    client.cookies.clear()
    assert sign_in(client, "marketing").status_code == 303
    monkeypatch.undo()
    assert SESSION_COOKIE in client.cookies
    assert client.get("/experiments/ranker-vs-rules").status_code == 401


def test_a_session_ends_with_its_key() -> None:
    kept = ApiKeys({KEYS["marketing"]: "marketing", KEYS["admin"]: "admin"})
    tokens = SessionTokens(kept, "a secret of the server", max_age_seconds=3600)
    token = tokens.issue(KEYS["marketing"])
    assert tokens.role_of(token) == "marketing"
    # The key taken out of OFFERS_API_KEYS: the next start no longer knows its sessions.
    without = SessionTokens(ApiKeys({KEYS["admin"]: "admin"}), "a secret of the server", 3600)
    assert without.role_of(token) is None
    # Another server secret: no session signed with the old one holds.
    resigned = SessionTokens(kept, "another secret", max_age_seconds=3600)
    assert resigned.role_of(token) is None


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, "marketing")
    signed_out = client.post("/sign-out", follow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/sign-in"
    assert "max-age=0" in set_cookie_of(signed_out).lower()
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/experiments/ranker-vs-rules").status_code == 401


def test_a_form_posted_from_another_site_is_refused(client: TestClient) -> None:
    elsewhere = {"Origin": "https://elsewhere.example"}
    posted = client.post(
        "/sign-in", data={"key": KEYS["marketing"]}, headers=elsewhere, follow_redirects=False
    )
    assert posted.status_code == 403
    assert SESSION_COOKIE not in client.cookies
    same_site = client.post(
        "/sign-in",
        data={"key": KEYS["marketing"]},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert same_site.status_code == 303
    assert client.post("/sign-out", headers=elsewhere).status_code == 403
    assert SESSION_COOKIE in client.cookies


def test_a_page_refuses_a_query_parameter_it_does_not_take_after_its_sign_in(
    client: TestClient,
) -> None:
    """A misspelt invoice_date must not silently preview the invoice on another day."""
    page = "/preview/invoices/INV-NONE"
    misspelt = {"customer_id": "C0001", "invoice_dat": "2026-11-30"}
    # Without a session a browser is sent to sign in and a script gets 401, as for any query.
    unsigned = client.get(page, params=misspelt, headers=BROWSER, follow_redirects=False)
    assert unsigned.status_code == 303
    assert unsigned.headers["location"].startswith("/sign-in?next=")
    assert client.get(page, params=misspelt).status_code == 401
    refused = client.get(page, params=misspelt, headers=auth("renderer"))
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "loc": ["query", "invoice_dat"],
            "msg": "no such query parameter",
            "type": "extra_forbidden",
        }
    ]
    spelt = {"customer_id": "C0001", "invoice_date": "2026-11-30", "locale": "en"}
    assert client.get(page, params=spelt, headers=auth("renderer")).status_code == 200
    # The experiment report page, opened with the session cookie: checked after the sign-in.
    assert client.post("/v1/experiments", json=EXPERIMENT, headers=auth("marketing")).is_success
    sign_in(client, "marketing")
    report = "/experiments/ranker-vs-rules"
    assert client.get(report, headers=BROWSER).status_code == 200
    lang = client.get(report, params={"lang": "en"}, headers=BROWSER)
    assert lang.status_code == 422
    assert lang.json()["errors"][0]["loc"] == ["query", "lang"]
    # The sign-in form takes `next` in its query; posted, `next` is a form field, not a query.
    assert client.get("/sign-in", params={"next": report}).status_code == 200
    assert client.get("/sign-in", params={"nxt": report}).status_code == 422
    posted = client.post(
        "/sign-in", params={"next": report}, data={"key": KEYS["marketing"]}, follow_redirects=False
    )
    assert posted.status_code == 422
    assert client.post("/sign-out", params={"now": "1"}, follow_redirects=False).status_code == 422
    assert SESSION_COOKIE in client.cookies


# The invoice preview ----------------------------------------------------------------------------

OFFER_ID = re.compile(r'data-offer-id="([^"]+)"')
REASON = re.compile(r'<li class="reason" data-code="[^"]+">([^<]+)</li>')
PERIOD = re.compile(r'<span id="usage-period">([^<]+)</span>')
SOURCE = re.compile(r'id="source" data-source="([^"]+)"')


def _shown(page: Any) -> dict[str, Any]:
    """What a reader checks on the preview: where it came from, the offers, reasons, period."""
    import html

    period = PERIOD.search(page.text)
    source = SOURCE.search(page.text)
    return {
        "source": source.group(1) if source else None,
        "offers": OFFER_ID.findall(page.text),
        "reasons": [html.unescape(text) for text in REASON.findall(page.text)],
        "period": period.group(1) if period else None,
    }


def _expected(answer: dict[str, Any], source: str) -> dict[str, Any]:
    period = answer["usage_summary"]["period"]
    return {
        "source": source,
        "offers": [offer["offer_id"] for offer in answer["offers"]],
        "reasons": [reason["text"] for offer in answer["offers"] for reason in offer["reasons"]],
        "period": f"{period['start']} – {period['end']}",
    }


def test_the_preview_of_an_undecided_invoice_is_a_dry_run_stored_nowhere(
    app: FastAPI, client: TestClient
) -> None:
    api = client.post("/v1/offers", json=offers_body(dry_run=True), headers=auth("renderer"))
    page = client.get(
        "/preview/invoices/INV-2026-11-0001",
        params={"customer_id": "C0001", "invoice_date": "2026-11-30", "locale": "sv"},
        headers=auth("marketing"),
    )
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert _shown(page) == _expected(api.json(), "dry-run")
    assert _shown(page)["offers"], "the heavy user C0001 is offered something"
    assert "Din användning" in page.text and "Tillkommande avgifter" in page.text
    assert app.state.services.log.find("INV-2026-11-0001") is None


def test_the_preview_of_a_decided_invoice_replays_its_stored_decision(client: TestClient) -> None:
    decided = client.post("/v1/offers", json=offers_body(), headers=auth("renderer")).json()
    page = client.get("/preview/invoices/INV-2026-11-0001", headers=auth("renderer"))
    assert page.status_code == 200
    assert _shown(page) == _expected(decided, "stored")
    assert decided["decision_id"] in page.text
    # The same page asked with the customer: still the stored decision, not a new one.
    with_customer = client.get(
        "/preview/invoices/INV-2026-11-0001",
        params={"customer_id": "C0001"},
        headers=auth("renderer"),
    )
    assert _shown(with_customer) == _expected(decided, "stored")


@pytest.mark.parametrize(
    ("locale", "saves", "costs_more"),
    [
        ("en", "You save SEK 31.44/month", "SEK 262.65/month more than you pay now"),
        ("sv", "Du sparar 31,44 kr/mån", "262,65 kr/mån mer än du betalar nu"),
    ],
)
def test_the_preview_never_calls_an_offer_that_costs_more_a_saving(
    client: TestClient, locale: str, saves: str, costs_more: str
) -> None:
    answer = client.post(
        "/v1/offers", json=offers_body(dry_run=True, locale=locale), headers=auth("renderer")
    ).json()
    template = {**answer["offers"][0], "reasons": []}
    answer["offers"] = [
        {**template, "offer_id": "SAVES", "rank": 1, "customer_saving_sek_per_month": 31.44},
        {**template, "offer_id": "COSTS", "rank": 2, "customer_saving_sek_per_month": -262.65},
        {**template, "offer_id": "SAME", "rank": 3, "customer_saving_sek_per_month": 0.0},
    ]
    page = (
        _templates()
        .get_template("preview.html")
        .render(
            preview_context(OffersResponse.model_validate(answer), False, locale)  # type: ignore[arg-type]
        )
    )
    offers = OFFER_ID.findall(page)
    assert offers == ["SAVES", "COSTS", "SAME"]
    # Each offer's text, from its title to the next offer's.
    blocks = re.split(r'data-offer-id="[^"]+"', page.split('id="offers"')[1])[1:]
    text = {
        offer: " ".join(re.sub(r"<[^>]+>", " ", block).replace("\xa0", " ").split())
        for offer, block in zip(offers, blocks, strict=True)
    }
    assert saves in text["SAVES"] and costs_more not in text["SAVES"]
    assert costs_more in text["COSTS"] and "-262" not in text["COSTS"]
    assert "save" not in text["COSTS"] and "sparar" not in text["COSTS"]
    assert "You save" not in text["SAME"] and "Du sparar" not in text["SAME"]


def test_the_preview_explains_each_extra_charge_in_the_customers_language(
    client: TestClient,
) -> None:
    api = client.post(
        "/v1/offers", json=offers_body(locale="en", dry_run=True), headers=auth("renderer")
    ).json()
    charges = api["usage_summary"]["extra_charges"]
    assert charges, "the heavy user C0001 pays data overage"
    page = client.get(
        "/preview/invoices/INV-2026-11-0001",
        params={"customer_id": "C0001", "invoice_date": "2026-11-30", "locale": "en"},
        headers=auth("renderer"),
    )
    assert "Your usage" in page.text and "Extra charges" in page.text
    import html

    text = html.unescape(page.text)
    for charge in charges:
        assert charge["explanation"] in text


def test_the_preview_says_what_is_missing(client: TestClient) -> None:
    marketing = auth("marketing")
    no_decision = client.get("/preview/invoices/INV-NONE", headers=marketing)
    assert no_decision.status_code == 404
    assert no_decision.headers["content-type"].startswith("text/html")
    assert "Invoice INV-NONE has no stored decision." in no_decision.text
    assert "customer_id" in no_decision.text
    unknown = client.get(
        "/preview/invoices/INV-NONE", params={"customer_id": "C9999"}, headers=marketing
    )
    assert unknown.status_code == 404
    assert "Customer C9999 is not known" in unknown.text
    client.post("/v1/offers", json=offers_body(), headers=auth("renderer"))
    another = client.get(
        "/preview/invoices/INV-2026-11-0001", params={"customer_id": "C0002"}, headers=marketing
    )
    assert another.status_code == 409
    assert "already decided for another customer" in another.text
    far = client.get(
        "/preview/invoices/INV-NONE",
        params={"customer_id": "C0001", "invoice_date": "2020-01-31"},
        headers=marketing,
    )
    assert far.status_code == 422
    assert far.json()["errors"][0]["loc"] == ["query", "invoice_date"]
    assert "invoice_date 2020-01-31 is outside" in far.json()["detail"]
    bad_locale = client.get(
        "/preview/invoices/INV-NONE", params={"locale": "de"}, headers=marketing
    )
    assert bad_locale.status_code == 422
    assert bad_locale.json()["errors"][0]["loc"] == ["query", "locale"]


def test_pages_load_nothing_from_another_site(client: TestClient) -> None:
    client.post("/v1/offers", json=offers_body(), headers=auth("renderer"))
    client.post("/v1/experiments", json=EXPERIMENT, headers=auth("marketing"))
    pages = [
        client.get("/sign-in"),
        client.get("/experiments/ranker-vs-rules", headers=auth("marketing")),
        client.get("/preview/invoices/INV-2026-11-0001", headers=auth("renderer")),
        client.get("/preview/invoices/INV-NONE", headers=auth("renderer")),
    ]
    for page in pages:
        assert page.status_code in {200, 404}
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), page.url
        assert "<script" not in page.text


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_counts_failures_per_address_within_the_window() -> None:
    clock = Clock()
    throttle = SignInThrottle(3, 60, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") is None  # 2 of 3
    throttle.failed("10.0.0.1")  # at 1020: the third within 60 s
    assert throttle.retry_after("10.0.0.2") is None  # another address is not held back
    # The first failure (at 1000) leaves the window at 1060: 40 s from now (1020).
    assert throttle.retry_after("10.0.0.1") == 40
    clock.now = 1059.5
    assert throttle.retry_after("10.0.0.1") == 1
    clock.now = 1060.0
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")  # 1010, 1020 and 1060 in the window again
    assert throttle.retry_after("10.0.0.1") == 10
    with pytest.raises(ValueError, match="max_failures"):
        SignInThrottle(0, 60)


def test_the_throttle_holds_a_bounded_number_of_addresses() -> None:
    throttle = SignInThrottle(1, 60, clock=Clock(), max_addresses=2)
    for address in ("a", "b", "c"):
        throttle.failed(address)
    assert throttle.retry_after("a") is None  # the least recently failed is forgotten
    assert throttle.retry_after("b") == 60 and throttle.retry_after("c") == 60


def test_too_many_unknown_keys_are_429_whatever_the_next_key(client: TestClient) -> None:
    clock = Clock()
    services = client.app.state.services  # type: ignore[attr-defined]
    services.sign_ins = SignInThrottle(5, 300, clock=clock)
    for number in range(5):
        wrong = client.post("/sign-in", data={"key": f"wrong-key-{number}", "next": ""})
        assert wrong.status_code == 401
        clock.now += 30  # failures at 1000, 1030, …, 1120
    # The sixth try, now at 1150, is refused before the key is looked at: a known key gets the
    # same answer as an unknown one, so the refusal tells nothing about which keys exist.
    answers = [
        client.post("/sign-in", data={"key": key, "next": ""}, follow_redirects=False)
        for key in (KEYS["marketing"], "wrong-key-again")
    ]
    for refused in answers:
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "150"  # the failure at 1000 leaves at 1300
        assert "Too many failed sign-ins from your address. Try again in 3 minutes." in (
            refused.text
        )
        assert "not known" not in refused.text
        assert "set-cookie" not in refused.headers
        assert refused.headers["cache-control"] == "no-store"
    assert answers[0].text == answers[1].text
    clock.now = 1300.0  # the first failure has left the window: 4 remain, one more try
    assert sign_in(client, "marketing").status_code == 303


def test_an_empty_key_is_not_counted_as_a_failure(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    services.sign_ins = SignInThrottle(1, 300, clock=Clock())
    for _ in range(3):
        assert client.post("/sign-in", data={"key": " ", "next": ""}).status_code == 422
    assert sign_in(client, "marketing").status_code == 303


def test_the_limit_by_default_is_five_unknown_keys_in_five_minutes(client: TestClient) -> None:
    statuses = [
        client.post("/sign-in", data={"key": f"wrong-{n}", "next": ""}).status_code
        for n in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    refused = client.post("/sign-in", data={"key": KEYS["marketing"], "next": ""})
    assert refused.status_code == 429 and 295 <= int(refused.headers["retry-after"]) <= 300
