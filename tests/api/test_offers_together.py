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


def test_requests_arriving_together_are_decided_in_one_call_each_as_alone(
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
        assert waiting.calls == 1
        assert len(calls) == 1  # one acceptance call for every invoice the model decided
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


def test_a_lone_request_is_decided_at_once(client: Any) -> None:
    (response,) = together(client, [offers_body(invoice_id="INV-LONE")])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert services_of(client).waiting.calls == 1
    assert stored_decisions(client) == 1


def test_a_write_that_fails_answers_every_request_of_the_call_503_and_stores_none(
    client: Any,
) -> None:
    log = services_of(client).log
    database = Path(log.engine.url.database)
    with sqlite3.connect(database) as connection:  # the third decision's insert fails
        connection.execute(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON decisions "
            "WHEN NEW.invoice_id = 'INV-W3' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    bodies = [offers_body(invoice_id=f"INV-W{n}") for n in range(1, 5)]
    responses = together(client, bodies)
    assert [response.status_code for response in responses] == [503] * 4
    assert all(response.headers["retry-after"] == "1" for response in responses)
    assert all("disk full" not in response.text for response in responses)
    assert stored_decisions(client) == 0
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER refuse_third")
    assert [response.status_code for response in together(client, bodies)] == [200] * 4
    assert stored_decisions(client) == 4


def test_more_requests_than_one_call_takes_are_decided_in_calls_of_at_most_that_many(
    client: Any,
) -> None:
    from serving.api.together import MOST_TOGETHER

    bodies = [
        offers_body(invoice_id=f"INV-M{n}", customer_id=f"C000{1 + n % 3}")
        for n in range(MOST_TOGETHER + 5)
    ]
    responses = together(client, bodies)
    assert [response.status_code for response in responses] == [200] * len(bodies)
    assert services_of(client).waiting.calls == 2
    assert stored_decisions(client) == len(bodies)
