"""Many invoices in one engine call: each decided as it would be alone, the models called once
per step for all of them, and one invoice's trouble kept to that invoice."""

from __future__ import annotations

import datetime as dt
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from serving.decision.engine import MODEL_ERROR, DecisionCall, decide, decide_many
from serving.decision.inputs import ExperimentAssignment, UnknownCustomerError
from tests.factories.decision import (
    BoosterScorer,
    account,
    consent,
    heavy_user,
    make_catalog,
    profile,
    request,
)
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES

CATALOG = make_catalog()


class Customers:
    """Several customers' features; a customer it does not hold is unknown to it."""

    def __init__(self, rows: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]):
        self.rows = rows

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        held = self.rows.get(customer_id)
        return None if held is None else dict(held[0])

    def read_account(self, customer_id: str) -> dict[str, Any]:
        return dict(self.rows[customer_id][1])

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.read_account(customer_id), dict(self.rows[customer_id][2])


class Counted(BoosterScorer):
    """A LightGBM scorer that counts its model calls and the rows in each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(("acceptance", len(rows)))
        return super().acceptance(rows)

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(("contributions", len(rows)))
        return super().contributions(rows)

    def churn_risks(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(("churn_risks", len(rows)))
        return super().churn_risks(rows)


class Failing(Counted):
    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("the model file is damaged")


def _booster(width: int, seed: int, column: int) -> lgb.Booster:
    """A small binary booster whose score depends on one input column among noise."""
    generator = np.random.default_rng(seed)
    inputs = generator.normal(size=(600, width))
    labels = (inputs[:, column] + generator.normal(scale=0.5, size=600) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed}
    return lgb.train(params, lgb.Dataset(inputs, labels), num_boost_round=15)


def _scorer(version: str, seed: int, cls: type[Counted] = Counted) -> Counted:
    # The ranker leans on the offer's monthly fee, so candidates differ in acceptance.
    ranker = _booster(len(RANKER_FEATURES), seed, RANKER_FEATURES.index("offer_monthly_fee_sek"))
    churn = _booster(len(CHURN_FEATURES), seed + 1, 0)
    return cls(ranker, churn, model_version=version)


def _customers() -> Customers:
    rows = {}
    for number in range(1, 9):
        usage = 3.0 + 1.7 * number
        features = heavy_user if number % 2 else account
        rows[f"C{number:04d}"] = (
            consent(),
            features(data_gb_avg_3m=usage, data_gb_max_3m=usage + 1, tenure_months=6 * number),
            profile(age=20 + 5 * number, satisfaction=float(number % 5)),
        )
    rows["C0009"] = (consent(), heavy_user(), profile())  # on the rules arm
    rows["C0010"] = (consent(objected=True), account(), profile())  # nothing is shown
    rows["C0011"] = (consent(profiling=False, usage_insights=False, segment="business"),
                     account(), profile())  # fmt: skip
    return Customers(rows)


def _calls(champion: Counted, challenger: Counted) -> list[DecisionCall]:
    calls = []
    for number in range(1, 13):  # C0012 is unknown to the features
        customer = f"C{number:04d}"
        on_challenger = number in (3, 4)
        policy = "model:2" if on_challenger else "rules" if number == 9 else "model"
        # One invoice dated before the rows' newest month ended: its usage is moved back.
        dated = {"invoice_date": dt.date(2026, 10, 20)} if number == 6 else {}
        calls.append(
            DecisionCall(
                request(invoice_id=f"INV-{number}", customer_id=customer, max_offers=2, **dated),
                policy=policy,
                scorer=challenger if on_challenger else champion,
                recently_declined=frozenset({"PLAN_30GB"}) if number == 5 else frozenset(),
                experiment=ExperimentAssignment("fees", "treatment") if on_challenger else None,
            )
        )
    return calls


def test_each_invoice_is_decided_as_it_would_be_alone() -> None:
    champion, challenger = _scorer("offer-ranker/1", 1), _scorer("offer-ranker/2", 7)
    source = _customers()
    calls = _calls(champion, challenger)

    together = decide_many(calls, source, CATALOG)

    assert len(together) == len(calls)
    unknown = together[-1]
    assert isinstance(unknown, UnknownCustomerError) and "C0012" in str(unknown)
    for call, outcome in zip(calls[:-1], together[:-1], strict=True):
        alone = decide(
            call.request,
            source,
            CATALOG,
            policy=call.policy,
            scorer=call.scorer,
            recently_declined=call.recently_declined,
            experiment=call.experiment,
        )
        assert outcome == alone
    decided = [outcome for outcome in together[:-1] if not isinstance(outcome, Exception)]
    assert [d.policy for d in decided] == ["model"] * 8 + ["rules", "none", "non_personalised"]
    assert [d.model_version for d in decided[:8]] == ["offer-ranker/1"] * 2 + [
        "offer-ranker/2"
    ] * 2 + ["offer-ranker/1"] * 4
    # The models did tell the customers apart: not every decision got the same probabilities.
    shown = {
        tuple(offer.acceptance_probability for offer in d.offers) for d in decided[:8] if d.offers
    }
    assert len(shown) > 1
    assert "PLAN_30GB" not in {offer.offer_id for offer in decided[4].offers}
    assert decided[5].usage_summary is not None
    assert decided[5].usage_summary["period"]["start"] == "2026-09-01"
    assert decided[6].usage_summary is not None
    assert decided[6].usage_summary["period"]["start"] == "2026-10-01"


def test_the_models_are_called_once_per_step_for_all_the_invoices() -> None:
    champion, challenger = _scorer("offer-ranker/1", 1), _scorer("offer-ranker/2", 7)
    together = decide_many(_calls(champion, challenger), _customers(), CATALOG)

    decided = [outcome for outcome in together if not isinstance(outcome, Exception)]
    shown_by_champion = sum(len(d.offers) for d in decided if d.model_version == "offer-ranker/1")
    assert [name for name, _ in champion.calls] == ["acceptance", "churn_risks", "contributions"]
    assert champion.calls[1] == ("churn_risks", 6)  # six customers, one churn row each
    assert champion.calls[2] == ("contributions", shown_by_champion)  # the shown offers only
    assert [name for name, _ in challenger.calls] == ["acceptance", "churn_risks", "contributions"]
    assert challenger.calls[1] == ("churn_risks", 2)


def test_a_model_that_fails_leaves_its_invoices_to_the_rules_and_no_others() -> None:
    champion = _scorer("offer-ranker/1", 1, Failing)
    challenger = _scorer("offer-ranker/2", 7)
    together = decide_many(_calls(champion, challenger), _customers(), CATALOG)

    decided = [outcome for outcome in together if not isinstance(outcome, Exception)]
    for index, decision in enumerate(decided[:8]):
        if index in (2, 3):  # the challenger's invoices are scored as usual
            assert (decision.policy, decision.degraded) == ("model", None)
        else:
            assert (decision.policy, decision.degraded) == ("fallback", MODEL_ERROR)
            assert decision.model_version is None
            assert all(offer.acceptance_probability is None for offer in decision.offers)
    assert (decided[8].policy, decided[8].degraded) == ("rules", None)


class NeverRead(Customers):
    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        raise AssertionError("read before the lifted rules were checked")


def test_lifting_an_unknown_rule_is_refused_before_anything_is_read() -> None:
    calls = _calls(_scorer("offer-ranker/1", 1), _scorer("offer-ranker/2", 7))
    with pytest.raises(ValueError, match="cannot be lifted"):
        decide_many(calls, NeverRead(_customers().rows), CATALOG, lifted=frozenset({"consent"}))


class ReadsMany(Customers):
    """Reads many customers at once and records whose profile was read."""

    def __init__(self, rows: Any) -> None:
        super().__init__(rows)
        self.profiles_read: list[str] = []
        self.reads = 0

    def read_consents(self, customer_ids: list[str]) -> list[dict[str, Any] | None]:
        self.reads += 1
        return [self.read_consent(customer) for customer in customer_ids]

    def read_accounts(self, customer_ids: list[str]) -> list[dict[str, Any]]:
        self.reads += 1
        return [self.read_account(customer) for customer in customer_ids]

    def read_accounts_and_profiles(
        self, customer_ids: list[str]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        self.reads += 1
        self.profiles_read += customer_ids
        return [self.read_account_and_profile(customer) for customer in customer_ids]


def test_many_customers_are_read_together_and_profiles_only_where_consent_allows() -> None:
    champion, challenger = _scorer("offer-ranker/1", 1), _scorer("offer-ranker/2", 7)
    calls = _calls(champion, challenger)
    together = ReadsMany(_customers().rows)

    outcomes = decide_many(calls, together, CATALOG)

    assert outcomes[:-1] == decide_many(calls[:-1], _customers(), CATALOG)
    assert isinstance(outcomes[-1], UnknownCustomerError)
    assert together.reads == 3  # consents, accounts with profiles, the other accounts
    # The eight the model decides; not the rules arm's, the objector's or the business
    # customer's without profiling consent.
    assert sorted(together.profiles_read) == [f"C{n:04d}" for n in range(1, 9)]


class StoreDown(ReadsMany):
    def read_accounts(self, customer_ids: list[str]) -> list[dict[str, Any]]:
        raise ConnectionError("the online store went away")


def test_a_store_that_fails_a_read_of_many_fails_each_invoice_as_alone() -> None:
    champion, challenger = _scorer("offer-ranker/1", 1), _scorer("offer-ranker/2", 7)
    outcomes = decide_many(_calls(champion, challenger), StoreDown(_customers().rows), CATALOG)
    # The accounts' read failed: the known customers answer with the failure; the customer the
    # consent read did not find is still unknown (404, not a fallback decision).
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes[:-1])
    assert isinstance(outcomes[-1], UnknownCustomerError)


class ConsentsDown(ReadsMany):
    def read_consents(self, customer_ids: list[str]) -> list[dict[str, Any] | None]:
        raise ConnectionError("the online store went away")


def test_a_store_that_fails_the_consents_read_fails_every_invoice() -> None:
    champion, challenger = _scorer("offer-ranker/1", 1), _scorer("offer-ranker/2", 7)
    outcomes = decide_many(_calls(champion, challenger), ConsentsDown(_customers().rows), CATALOG)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)


class OneBadRow(Counted):
    """A model that fails on one customer's inputs (tenure 42 months), whatever else it gets."""

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        if (rows[:, RANKER_FEATURES.index("tenure_months")] == 42).any():
            raise ValueError("input out of range")
        return super().acceptance(rows)


def test_a_model_that_fails_on_one_invoice_sends_only_that_one_to_the_rules() -> None:
    champion = _scorer("offer-ranker/1", 1, OneBadRow)
    challenger = _scorer("offer-ranker/2", 7)
    outcomes = decide_many(_calls(champion, challenger), _customers(), CATALOG)
    decided = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    # C0007 has 42 months of tenure; the batch call failed, each invoice was scored alone.
    assert [(d.customer_id, d.policy) for d in decided if d.policy != "model"][:1] == [
        ("C0007", "fallback")
    ]
    assert decided[6].degraded == MODEL_ERROR
    assert all(d.policy == "model" and d.degraded is None for d in decided[:6] + decided[7:8])
