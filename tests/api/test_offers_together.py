"""Single ``POST /v1/offers`` requests that arrive together are decided in one engine call, each
answered as it would have been alone (``serving.api.together``). Only requests decided on the
event loop are gathered: here the online store bounds its own reads, as SQLite and Redis do."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories.api import FakeFeatures, auth, make_app, offers_body, running

RENDERER = auth("renderer")


class BoundedFeatures(FakeFeatures):
    """The fake store, giving up on its own reads as the SQLite and Redis stores do."""

    def __init__(self) -> None:
        super().__init__()
        self.bounds_reads = True


@pytest.fixture
def features() -> FakeFeatures:
    return BoundedFeatures()


def together(client: Any, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send ``bodies`` at the same moment, on the app's own event loop, as concurrent renderers
    would; the responses in order."""

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://offers") as http:
            return list(
                await asyncio.gather(
                    *(http.post("/v1/offers", json=body, headers=RENDERER) for body in bodies)
                )
            )

    responses: list[httpx.Response] = client.portal.call(send_all)
    return responses


def without_decision_id(response: httpx.Response | Any) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(response.text)
    answer.pop("decision_id", None)
    return answer


def services_of(client: Any) -> Any:
    return client.app.state.services


def stored_decisions(client: Any) -> int:
    log = services_of(client).log
    with log.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM decisions").scalar_one())


BODIES = [
    offers_body(invoice_id="INV-T1", customer_id="C0001"),
    offers_body(invoice_id="INV-T2", customer_id="C0002", locale="en"),
    offers_body(invoice_id="INV-T3", customer_id="C0009"),  # not a known customer
    offers_body(invoice_id="INV-T4", customer_id="C0003", max_offers=1),
    offers_body(invoice_id="INV-T5", customer_id="C0004"),  # no consent to offers
    offers_body(invoice_id="INV-T6", customer_id="C0001", dry_run=True),
    offers_body(invoice_id="INV-T1", customer_id="C0002"),  # INV-T1 is C0001's
    offers_body(invoice_id="INV-T1", customer_id="C0001"),  # asked again at once
]


def test_requests_arriving_together_are_decided_together_each_as_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.scoring_model import LightGBMScorer

    calls: list[str] = []
    original = LightGBMScorer.acceptance

    def counted(self: Any, rows: Any) -> Any:
        calls.append("acceptance")
        return original(self, rows)

    monkeypatch.setattr(LightGBMScorer, "acceptance", counted)
    with running(make_app(tmp_path / "together", features=BoundedFeatures())) as client:
        calls.clear()  # the models' warm-up at start
        answered = together(client, BODIES)
        waiting = services_of(client).waiting
        # One invoice per customer and call: T1-T5, then T6 and T7 (C0001's and C0002's second),
        # then T8 (C0001's third); alone, each would see the one before it in the log.
        assert waiting.calls == 3
        assert len(calls) == 2  # the model's invoices of the first call together, then T6
        stored = stored_decisions(client)
        replayed = client.post("/v1/offers", json=BODIES[0], headers=RENDERER)
    with running(make_app(tmp_path / "alone", features=BoundedFeatures())) as client:
        calls.clear()
        alone = [client.post("/v1/offers", json=body, headers=RENDERER) for body in BODIES]
        assert len(calls) == 3  # INV-T1, INV-T2 and INV-T6's dry run, each alone
        assert stored_decisions(client) == stored

    assert [response.status_code for response in answered] == [
        200,
        200,
        404,
        200,
        200,
        200,
        409,
        200,
    ]
    policies = [json.loads(response.text).get("policy") for response in answered]
    assert policies == ["model", "model", None, "non_personalised", "none", "model", None, "model"]
    assert [response.status_code for response in alone] == [r.status_code for r in answered]
    for together_answer, alone_answer in zip(answered, alone, strict=True):
        assert without_decision_id(together_answer) == without_decision_id(alone_answer)
    first = json.loads(answered[0].text)
    assert first["policy"] == "model" and first["offers"]
    # The invoice asked twice at once has one decision, which a later request replays.
    assert answered[7].text == answered[0].text == replayed.text
    assert json.loads(answered[5].text)["dry_run"] is True
    assert stored == 4  # INV-T1, T2, T4, T5; not the unknown customer nor the dry run


def test_a_lone_request_is_decided_in_a_call_of_its_own_and_replayed(client: Any) -> None:
    body = offers_body(invoice_id="INV-LONE")
    (response,) = together(client, [body])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = json.loads(response.text)
    assert (answer["invoice_id"], answer["policy"]) == ("INV-LONE", "model") and answer["offers"]
    assert services_of(client).waiting.calls == 1
    assert stored_decisions(client) == 1
    assert client.post("/v1/offers", json=body, headers=RENDERER).text == response.text


def test_a_write_that_fails_for_one_request_fails_that_request_alone(client: Any) -> None:
    log = services_of(client).log
    database = Path(log.engine.url.database)
    with sqlite3.connect(database) as connection:  # the third decision's insert fails
        connection.execute(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON decisions "
            "WHEN NEW.invoice_id = 'INV-W3' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    customers = ["C0001", "C0002", "C0003", "C0004"]
    bodies = [
        offers_body(invoice_id=f"INV-W{n}", customer_id=customer)
        for n, customer in enumerate(customers, start=1)
    ]
    responses = together(client, bodies)
    assert [response.status_code for response in responses] == [200, 200, 503, 200]
    assert responses[2].headers["retry-after"] == "1"
    assert "disk full" not in responses[2].text
    # The call for all four failed and stored none; each was then decided alone.
    assert services_of(client).waiting.calls == 5
    assert stored_decisions(client) == 3
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER refuse_third")
    again = together(client, bodies)
    assert [response.status_code for response in again] == [200] * 4
    assert [r.text for r in again[:2]] == [r.text for r in responses[:2]]  # replayed
    assert stored_decisions(client) == 4


def test_more_requests_than_one_call_takes_are_decided_in_calls_of_at_most_that_many(
    client: Any,
) -> None:
    from serving.api.together import MOST_TOGETHER

    # Customers the store does not know: each a 404, all decided (and refused) together.
    bodies = [
        offers_body(invoice_id=f"INV-M{n}", customer_id=f"C9{n:03d}")
        for n in range(MOST_TOGETHER + 5)
    ]
    responses = together(client, bodies)
    assert [response.status_code for response in responses] == [404] * len(bodies)
    assert services_of(client).waiting.calls == 2
    assert stored_decisions(client) == 0


def _wait_observations(client: Any) -> tuple[float, float]:
    """The count and sum of the ``wait`` step in the app's metrics."""
    text = client.get("/metrics", headers=RENDERER).text
    found = {}
    for line in text.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f'offers_step_seconds_{part}{{step="wait"}}'):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found.get("count", 0.0), found.get("sum", 0.0)


def test_each_waiting_request_counts_its_wait_in_the_metrics(client: Any) -> None:
    from serving.api.together import MOST_TOGETHER

    # The ones that did not fit into the first call waited for it to be decided.
    bodies = [
        offers_body(invoice_id=f"INV-W{n}", customer_id=f"C9{n:03d}")
        for n in range(MOST_TOGETHER + 5)
    ]
    before, _ = _wait_observations(client)
    together(client, bodies)
    count, total = _wait_observations(client)
    assert count - before == len(bodies)
    assert total > 0.0
