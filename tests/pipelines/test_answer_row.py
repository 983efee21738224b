"""The invoice run's output row of an answer: read from the answer's own bytes, the same as by
parsing the whole answer (awkward strings, numbers written otherwise by ``json.dumps``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from pipelines.invoice_run.core import _parsed_answer_row, answer_row


class _Answer(BaseModel):
    """The top-level fields of POST /v1/offers in its order, serialised as the API does."""

    decision_id: str
    invoice_id: str
    customer_id: str
    policy: str
    model_version: str | None
    experiment: dict[str, Any] | None
    consent: dict[str, Any]
    offers: list[dict[str, Any]]
    usage_summary: dict[str, Any] | None
    degraded: str | None


def _answer(offers: list[dict[str, Any]], summary: dict[str, Any] | None, **head: Any) -> str:
    values: dict[str, Any] = {
        "decision_id": "d-1",
        "invoice_id": "INV-1",
        "customer_id": "C-1",
        "policy": "model",
        "model_version": "3",
        "experiment": None,
        "consent": {"marketing": True},
        "offers": offers,
        "usage_summary": summary,
        "degraded": None,
        **head,
    }
    return _Answer.model_validate(values).model_dump_json()


@pytest.mark.parametrize(
    ("offers", "summary", "head"),
    [
        ([{"offer_id": "PLAN_5GB", "acceptance_probability": 0.4123, "fee": 149.0}], None, {}),
        # Numbers json.dumps writes otherwise: 1e-05 (pydantic 0.00001), 1.5e-07 (1.5e-7).
        (
            [{"offer_id": "A", "acceptance_probability": 0.00001, "value": 1.5e-7}],
            {"plan": {"monthly_fee_sek": 0.00005}, "usage": [1e16, 0.1]},
            {},
        ),
        # Strings holding the answer's own keys, quotes, commas and control characters.
        (
            [{"title": 'e-faktura ,"usage_summary":{} ],"degraded":', "text": "å\n\x1f\\"}],
            {"explanation": ',"offers":[1]', "period": None},
            {"invoice_id": 'I,"experiment":x', "customer_id": 'c"\\'},
        ),
        ([], {"detail_level": "basic"}, {"degraded": "model_error"}),
    ],
)
def test_answer_row_is_the_parsed_answers_row(
    offers: list[dict[str, Any]], summary: dict[str, Any] | None, head: dict[str, Any]
) -> None:
    text = _answer(offers, summary, **head)
    assert answer_row(text) == _parsed_answer_row(text)


def test_answer_row_writes_small_numbers_as_json_dumps_does() -> None:
    row = answer_row(_answer([{"acceptance_probability": 0.00001}], None))
    assert row["offers"] == '[{"acceptance_probability":1e-05}]'
    assert row["usage_summary"] is None
    assert row["decision"].startswith('{"invoice_id":"INV-1",')
