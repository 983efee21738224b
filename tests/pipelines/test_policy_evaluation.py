"""The served-policy report's figures on hand-built replays."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.catalog import load_catalog
from pipelines import policy_evaluation
from pipelines.invoice_run.run import load_champions
from pipelines.policy_evaluation import (
    PolicyEvaluation,
    Replayed,
    _figures,
    choose_by_peer,
    compare_models,
    evaluate_served_policies,
    logged_decisions,
    paired_bootstrap,
    peer_gap,
    replay,
    what_if_objectives,
)
from serving.decision.arbitration import Objective
from serving.decision.engine import LIFTABLE
from tests.simulated_world import SimulatedWorld

DAY = dt.date(2026, 11, 20)


def _replay(decision: str, logged: str, accepted: bool, shown: dict[str, list[str]]) -> Replayed:
    return Replayed(
        decision_id=decision,
        customer_id=f"C-{decision}",
        day=DAY,
        logged_offer=logged,
        propensity=0.5,
        accepted=accepted,
        passed=["A", "B", "C"],
        model_acceptance={"A": 0.3, "B": 0.2, "C": 0.1},
        saving_sek={"A": 10.0, "B": -20.0, "C": 0.0},
        value_sek={"A": 400.0, "B": 100.0, "C": -5.0},
        shown=shown,
    )


# Hidden acceptance: in d1 A is best (0.4; B 0.1, C 0.1), in d2 B is (0.3; A 0.0, C 0.0).
HIDDEN = {
    ("d1", "A"): 0.4,
    ("d1", "B"): 0.1,
    ("d1", "C"): 0.1,
    ("d2", "A"): 0.0,
    ("d2", "B"): 0.3,
    ("d2", "C"): 0.0,
}
REPLAYS = [
    _replay("d1", "A", True, {"best": ["A", "B"], "none": [], "worst": ["C"]}),
    _replay("d2", "A", False, {"best": ["B"], "none": [], "worst": ["A"]}),
]


def test_the_best_policy_captures_all_the_lift_and_no_offer_loses_it() -> None:
    best = _figures(REPLAYS, "best", HIDDEN, 12, resamples=20)
    # random eligible: d1 (0.4 + 0.1 + 0.1) / 3 = 0.2, d2 0.1; best 0.4 and 0.3
    assert best["random_eligible_acceptance"] == pytest.approx(0.15)
    assert best["best_eligible_acceptance"] == pytest.approx(0.35)
    assert best["first_offer_acceptance"] == pytest.approx(0.35)
    assert best["lift_captured"] == pytest.approx(1.0)
    # The shown set in d1: 1 − (1 − 0.4)(1 − 0.7 × 0.1) = 0.442; d2 0.3
    assert best["shown_set_acceptance"] == pytest.approx((0.442 + 0.3) / 2)
    # Revenue and saving of the first offer over 12 months: d1 A saves 10 a month at 0.4.
    assert best["customer_saving_sek"] == pytest.approx((0.4 * 10 * 12 + 0.3 * -20 * 12) / 2)
    assert best["revenue_change_sek"] == pytest.approx(-best["customer_saving_sek"])
    assert best["with_offer"] == 1.0
    # The objective's value of the first offer times its hidden acceptance: 0.4 × 400, 0.3 × 100.
    assert best["objective_value_sek"] == pytest.approx((160.0 + 30.0) / 2)
    none = _figures(REPLAYS, "none", HIDDEN, 12, resamples=20)
    assert none["with_offer"] == 0.0
    assert none["lift_captured"] == pytest.approx((0.0 - 0.3) / 0.4)
    worst = _figures(REPLAYS, "worst", HIDDEN, 12, resamples=20)
    assert worst["lift_captured"] == pytest.approx((0.1 + 0.0 - 0.3) / 0.4)
    # C is worth less than nothing to the objective: counted as nothing, not as a gain.
    assert worst["objective_value_sek"] == pytest.approx((0.0 + 0.0) / 2)
    # Without an accepted offer value in the objective, the money terms are the whole value.
    assert best["money_terms_value_sek"] == best["objective_value_sek"]


def test_the_money_terms_leave_out_the_accepted_offer_value() -> None:
    # With 50 kr for an accepted offer, A's 400 is 350 of money terms and B's 100 is 50.
    best = _figures(REPLAYS, "best", HIDDEN, 12, resamples=20, accepted_offer_value_sek=50.0)
    assert best["objective_value_sek"] == pytest.approx((0.4 * 400 + 0.3 * 100) / 2)
    assert best["money_terms_value_sek"] == pytest.approx((0.4 * 350 + 0.3 * 50) / 2)
    worst = _figures(REPLAYS, "worst", HIDDEN, 12, resamples=20, accepted_offer_value_sek=50.0)
    assert worst["money_terms_value_sek"] == 0.0  # C's −5 stays nothing, never −55


def test_off_policy_value_follows_the_logged_outcomes() -> None:
    best = _figures(REPLAYS, "best", None, 12, resamples=20)
    # The policy agrees with the logged offer in d1 (accepted, propensity 0.5): IPS = 2 / 2.
    assert best["off_policy"]["ips"]["value"] == pytest.approx(1.0)
    assert best["off_policy"]["snips"]["value"] == pytest.approx(1.0)
    # DR: direct model values 0.3 (A in d1) and 0.2 (B in d2), plus 2 × (1 − 0.3) in d1.
    assert best["off_policy"]["dr"]["value"] == pytest.approx((0.3 + 1.4 + 0.2) / 2)
    assert "first_offer_acceptance" not in best  # no hidden truth outside a simulated world
    report = PolicyEvaluation("2026-11", 2, {"best": best}, 12)
    assert "| best | 100.0% |" in report.markdown()


@pytest.mark.integration
def test_the_served_engine_is_evaluated_on_the_simulated_world(
    simulated_world: SimulatedWorld,
) -> None:
    report = evaluate_served_policies(simulated_world.settings, sample=400, seed=1, resamples=50)
    assert report.month == "2026-11"
    assert 300 <= report.decisions <= 400  # logged decisions of customers the features know
    served = {"model", "rules", "popularity", "random", "acceptance", "peer"}
    served |= {"peer_within_guardrails"}
    lifted = {f"lifted:{rule}" for rule in LIFTABLE} | {"lifted:guardrails"}
    assert set(report.policies) == served | lifted
    for name, figures in report.policies.items():
        assert 0.0 < figures["with_offer"] <= 1.0, name
        if name in served - {"peer"}:  # the peer and a lifted rule may reach beyond that
            # No policy's first offer beats the best eligible one, on average.
            assert figures["first_offer_acceptance"] <= figures["best_eligible_acceptance"]
        assert figures["objective_value_sek"] >= 0.0, name
        dr = figures["off_policy"]["dr"]
        assert dr["low"] <= dr["value"] <= dr["high"], name
    model = report.policies["model"]
    assert model["objective_value_sek"] > 0.0  # the model's first offers carry their value
    # A random eligible offer captures about none of the achievable lift.
    assert abs(report.policies["random"]["lift_captured"]) < 0.35
    assert "| model |" in report.markdown()
    # The ablation: the model policy with each rule lifted in turn, as differences, and with the
    # guardrails the peer ignores lifted together.
    assert set(report.ablation()) == LIFTABLE | {"guardrails"}
    # The peer learnt from October's events only, and chose among more offers than the engine.
    peer = report.policies["peer"]
    assert peer["training"]["trained_before"] == "2026-11-01T00:00:00+00:00"
    assert peer["training"]["training_rows"] > 1_000
    assert peer["with_offer"] >= model["with_offer"]
    versus = report.peer()
    assert versus["peer_lift_captured"] == peer["lift_captured"]
    assert versus["guardrails_cost_lift_captured"] == pytest.approx(
        report.ablation()["guardrails"]["lift_captured"]
    )
    assert isinstance(versus["model_at_least_peer_less_cost"], bool)
    # The peer's lead over the engine with the guardrails lifted, split into its causes.
    gap = versus["gap_with_guardrails_lifted"]
    assert gap["lift_captured"]["peer"] == pytest.approx(peer["lift_captured"])
    lifted_lift = report.policies["lifted:guardrails"]["lift_captured"]
    assert gap["lift_captured"]["engine"] == pytest.approx(lifted_lift)
    parts = ("objective_weighting", "acceptance_estimates", "undecided_by_the_model")
    assert sum(gap[part] for part in parts) == pytest.approx(peer["lift_captured"] - lifted_lift)
    assert 0.0 <= gap["likeliest_is_hidden_best"]["model"] <= 1.0
    assert "the objective's weighting" in report.markdown()
    # Paired intervals over customers, each around its point estimate.
    paired = report.paired
    assert paired["resampled"] == "customers" and paired["customers"] <= report.decisions
    for name in served:
        interval = paired["lift_captured"][name]
        assert interval["value"] == pytest.approx(report.policies[name]["lift_captured"])
        assert interval["low"] <= interval["value"] <= interval["high"], name
    assert set(paired["differences"]) == {
        "model-rules",
        "model-peer",
        "model-peer_within_guardrails",
    }
    # The peer held to the guardrails chooses among fewer offers than the peer.
    within = report.policies["peer_within_guardrails"]
    assert within["first_offer_acceptance"] <= within["best_eligible_acceptance"]
    assert versus["peer_within_guardrails_lift_captured"] == within["lift_captured"]
    assert versus["model_at_least_peer_within_guardrails"] == (
        model["lift_captured"] >= within["lift_captured"]
    )
    assert "| model − rules |" in report.markdown() and "Argmax peer" in report.markdown()
    assert report.ablation()["below_acceptance_floor"]["with_offer"] >= 0.0
    assert "What each rule costs" in report.markdown()


def _customer_replays(
    invoices: int, customers: int, choose: dict[str, object], seed: int = 0
) -> tuple[list[Replayed], dict[tuple[str, str], float]]:
    """``invoices`` decisions of ``customers`` customers (invoices of a customer repeat), each
    with a best offer A, a middling B and a worst C of random hidden acceptance; each policy of
    ``choose`` shows A, B or C by its rule (a function of the invoice's number and a draw)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    replays, hidden = [], {}
    for number in range(invoices):
        decision = f"d{number}"
        worst = float(rng.uniform(0.0, 0.1))
        middle = worst + float(rng.uniform(0.0, 0.1))
        hidden |= {
            (decision, "A"): middle + float(rng.uniform(0.05, 0.15)),
            (decision, "B"): middle,
            (decision, "C"): worst,
        }
        draw = float(rng.uniform())
        shown = {name: [rule(number, draw)] for name, rule in choose.items()}  # type: ignore[operator]
        item = _replay(decision, "A", False, shown)
        item.customer_id = f"C-{number % customers}"
        replays.append(item)
    return replays, hidden


@pytest.mark.integration
def test_two_models_are_compared_on_the_same_invoices(simulated_world: SimulatedWorld) -> None:
    """The champion against itself: the same lift on every draw, so the paired difference and its
    interval are zero; and each lift is the one ``evaluate_served_policies`` reports."""
    from pipelines.invoice_run.run import load_champions

    settings = simulated_world.settings
    champions = load_champions(settings)
    month = dt.date(2026, 11, 1)
    compared = compare_models(settings, month, champions, champions, sample=300, seed=1)
    assert compared["month"] == "2026-11" and 200 <= compared["invoices"] <= 300
    first, second = compared["lift_captured"]
    assert first == second and first is not None
    assert compared["difference"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    report = evaluate_served_policies(
        settings, month=month, sample=300, seed=1, resamples=10, ablation=False
    )
    assert report.policies["model"]["lift_captured"] == pytest.approx(first)
    assert compared["first_offer_acceptance"][0] == pytest.approx(
        report.policies["model"]["first_offer_acceptance"]
    )


def test_the_paired_interval_holds_each_point_estimate_and_resamples_customers() -> None:
    replays, hidden = _customer_replays(
        300, 100, {"model": lambda n, u: "A" if u < 0.8 else "C", "rules": lambda n, u: "B"}
    )
    paired = paired_bootstrap(replays, hidden, ["model", "rules"], resamples=500, seed=3)
    assert paired["resampled"] == "customers" and paired["customers"] == 100
    for policy in ("model", "rules"):
        lift = paired["lift_captured"][policy]
        # The point estimate is the report's own figure, and the interval holds it.
        assert lift["value"] == pytest.approx(
            _figures(replays, policy, hidden, 12, resamples=20)["lift_captured"]
        )
        assert lift["low"] < lift["value"] < lift["high"]
        value = paired["objective_value_sek"][policy]
        assert value["low"] < value["value"] < value["high"]
    difference = paired["differences"]["model-rules"]["lift_captured"]
    assert difference["value"] == pytest.approx(
        paired["lift_captured"]["model"]["value"] - paired["lift_captured"]["rules"]["value"]
    )
    assert difference["low"] < difference["value"] < difference["high"]


def test_a_clear_difference_lies_above_zero_and_identical_policies_around_it() -> None:
    replays, hidden = _customer_replays(
        200,
        80,
        {
            "model": lambda n, u: "A",
            "rules": lambda n, u: "C",
            "same": lambda n, u: "A",
            # Best or worst at random, twice independently: equal in expectation only.
            "coin": lambda n, u: "A" if u < 0.5 else "C",
            "other_coin": lambda n, u: "A" if (u * 7919) % 1 < 0.5 else "C",
        },
    )
    paired = paired_bootstrap(
        replays,
        hidden,
        ["model", "rules", "same", "coin", "other_coin"],
        [("model", "rules"), ("model", "same"), ("coin", "other_coin")],
        resamples=500,
    )
    clear = paired["differences"]["model-rules"]
    # The best eligible offer every time against the worst: all of the lift against below none.
    assert clear["lift_captured"]["value"] > 1.0
    assert clear["lift_captured"]["low"] > 0.0 and clear["beats_beyond_interval"]
    assert clear["objective_value_sek"]["low"] > 0.0
    same = paired["differences"]["model-same"]
    assert same["lift_captured"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert not same["beats_beyond_interval"]
    coins = paired["differences"]["coin-other_coin"]["lift_captured"]
    assert coins["low"] < 0.0 < coins["high"]
    assert not paired["differences"]["coin-other_coin"]["beats_beyond_interval"]


def test_resampling_customers_widens_the_interval_when_their_invoices_agree() -> None:
    """A customer's invoices move together: ten invoices of one customer are one observation."""
    choose = {"model": lambda n, u: "A" if (n // 10) % 2 else "C", "rules": lambda n, u: "B"}
    clustered, hidden = _customer_replays(400, 40, choose)
    for item in clustered:  # C-k holds invoices 10k … 10k + 9: one customer, one choice
        item.customer_id = f"C-{int(item.decision_id[1:]) // 10}"
    independent, _ = _customer_replays(400, 400, choose)
    wide = paired_bootstrap(clustered, hidden, ["model", "rules"], resamples=400)
    narrow = paired_bootstrap(independent, hidden, ["model", "rules"], resamples=400)

    def width(paired: dict[str, Any]) -> float:
        interval = paired["differences"]["model-rules"]["lift_captured"]
        return float(interval["high"] - interval["low"])

    assert wide["customers"] == 40 and narrow["customers"] == 400
    assert width(wide) > 1.5 * width(narrow)


def test_the_report_prints_the_intervals_and_the_verdict() -> None:
    replays, hidden = _customer_replays(
        120, 60, {"model": lambda n, u: "A", "rules": lambda n, u: "C"}
    )
    policies = {p: _figures(replays, p, hidden, 12, resamples=20) for p in ("model", "rules")}
    paired = paired_bootstrap(replays, hidden, ["model", "rules"], resamples=200)
    report = PolicyEvaluation("2026-11", 120, policies, 12, paired)
    text = report.markdown()
    low = paired["lift_captured"]["model"]["low"]
    assert "| model | 100.0% | " in text and f"({low:.1%}–" in text
    assert "| model − rules | +" in text and "| yes |" in text
    assert report.as_dict()["paired"]["differences"]["model-rules"]["beats_beyond_interval"]


def _unguarded(
    decision: str,
    passed: list[str],
    hidden: dict[str, float],
    model: dict[str, float],
    value: dict[str, float],
    shown: dict[str, list[str]],
    profiled: bool = True,
) -> tuple[Replayed, dict[tuple[str, str], float]]:
    item = _replay(decision, passed[0], False, shown)
    item.passed, item.eligible, item.profiled = passed, list(hidden), profiled
    item.model_acceptance, item.value_sek = model, value
    return item, {(decision, offer): p for offer, p in hidden.items()}


def test_the_peers_lead_splits_into_the_objective_the_estimates_and_the_undecided() -> None:
    lifted = "lifted:guardrails"
    # d1: C is blocked by a guardrail, likeliest in truth and to the model; the engine with the
    # guardrails lifted weighs A's value above it (0.15 × 500 > 0.35 × 200).
    d1, h1 = _unguarded(
        "d1",
        ["A", "B"],
        {"A": 0.1, "B": 0.2, "C": 0.4},
        {"A": 0.15, "B": 0.3, "C": 0.35},
        {"A": 500.0, "B": 100.0, "C": 200.0},
        {"peer": ["C"], lifted: ["A"]},
    )
    # d2: the peer shows the likeliest A; by value even the hidden acceptance prefers B
    # (0.1 × 400 > 0.3 × 100), so the objective, not the model, gives up A here.
    d2, h2 = _unguarded(
        "d2",
        ["A", "B"],
        {"A": 0.3, "B": 0.1},
        {"A": 0.1, "B": 0.2},
        {"A": 100.0, "B": 400.0},
        {"peer": ["A"], lifted: ["B"]},
    )
    # d3: no profiling consent; the peer shows what the served engine shows (A).
    d3, h3 = _unguarded(
        "d3",
        ["A", "B"],
        {"A": 0.2, "B": 0.0},
        {},
        {},
        {"peer": ["A"], lifted: ["B"]},
        profiled=False,
    )
    gap = peer_gap([d1, d2, d3], h1 | h2 | h3)
    # Reference (the engine's eligible offers): best 0.2 + 0.3 + 0.2, random 0.15 + 0.2 + 0.1.
    achievable, random = 0.25, 0.45
    assert gap["lift_captured"]["peer"] == pytest.approx((0.4 + 0.3 + 0.2 - random) / achievable)
    assert gap["lift_captured"]["engine"] == pytest.approx((0.1 + 0.1 + 0.0 - random) / achievable)
    assert gap["lift_captured"]["hidden_value_order"] == pytest.approx(
        (0.4 + 0.1 + 0.2 - random) / achievable
    )
    assert gap["lift_captured"]["model_likeliest"] == pytest.approx(
        (0.4 + 0.1 + 0.2 - random) / achievable
    )
    assert gap["objective_weighting"] == pytest.approx((0.7 - 0.5) / achievable)
    assert gap["acceptance_estimates"] == pytest.approx((0.5 - 0.2) / achievable)
    assert gap["undecided_by_the_model"] == pytest.approx(0.2 / achievable)
    assert gap["gap"] == pytest.approx(2.8)
    assert gap["invoices_decided_by_the_model"] == 2
    assert gap["likeliest_is_hidden_best"] == {"model": 0.5, "peer": 1.0}
    assert gap["likeliest_hidden_acceptance"]["model"] == pytest.approx(0.25)
    assert gap["hidden_best_acceptance"] == pytest.approx(0.35)
    # With a tolerance for a likelier offer, the hidden order is the engine's rule too: on d2,
    # A's 0.3 × 100 is within 25 % of B's 0.1 × 400 and likelier, so from 0.25 A leads.
    for tolerance, d2_first in ((0.24, 0.1), (0.25, 0.3)):
        tolerant = peer_gap([d1, d2, d3], h1 | h2 | h3, tolerance)
        assert tolerant["lift_captured"]["hidden_value_order"] == pytest.approx(
            (0.4 + d2_first + 0.2 - random) / achievable
        )
        assert tolerant["objective_weighting"] == pytest.approx((0.3 - d2_first) / achievable)
    # Without the lifted engine's choices there is nothing to split.
    del d1.shown[lifted]
    assert peer_gap([d1, d2, d3], h1 | h2 | h3) == {}


class _FixedPeer:
    """An argmax peer whose acceptance is given per (decision, offer)."""

    def __init__(self, acceptance: dict[tuple[str, str], float]) -> None:
        self._acceptance = acceptance

    def acceptance(self, pairs: Any) -> Any:
        return [
            self._acceptance[(d, o)]
            for d, o in zip(pairs["decision_id"], pairs["offer_id"], strict=True)
        ]


def test_the_peer_held_to_the_guardrails_takes_its_likeliest_offer_they_let_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def replayed(decision: str, eligible: list[str], passed: list[str], profiled: bool) -> Replayed:
        item = _replay(decision, "A", False, {"model": ["B", "C"]})
        item.eligible, item.passed, item.profiled = eligible, passed, profiled
        return item

    items = [
        # The peer's likeliest (A) is blocked by a guardrail: held to them, C (0.3 > 0.2).
        replayed("d1", ["A", "B", "C", "D"], ["B", "C"], True),
        # B and C tie: the first offer id, as ArgmaxPeer.choose breaks ties.
        replayed("d2", ["B", "C"], ["B", "C"], True),
        # Every eligible offer blocked: the peer held to the guardrails shows nothing.
        replayed("d3", ["A"], [], True),
        # No profiling consent: both show what the served engine shows.
        replayed("d4", ["A", "B"], ["B"], False),
    ]
    scores = {
        ("d1", "A"): 0.5,
        ("d1", "B"): 0.2,
        ("d1", "C"): 0.3,
        ("d1", "D"): 0.1,
        ("d2", "B"): 0.4,
        ("d2", "C"): 0.4,
        ("d3", "A"): 0.6,
    }
    monkeypatch.setattr(
        policy_evaluation.ArgmaxPeer, "train", classmethod(lambda *_: _FixedPeer(scores))
    )
    settings: Any = type("Settings", (), {"features_dir": "features"})()
    choose_by_peer(items, events=None, settings=settings, catalog=None)  # type: ignore[arg-type]
    assert [r.shown["peer"] for r in items] == [["A"], ["B"], ["A"], ["B"]]
    assert [r.shown["peer_within_guardrails"] for r in items] == [["C"], ["B"], [], ["B"]]


def test_a_what_if_changes_one_setting_at_a_time_within_its_bounds() -> None:
    served = Objective(accepted_offer_value_sek=150.0, min_acceptance=0.02)
    variants = what_if_objectives(
        served, {"accepted_offer_value_sek": [0.0, 600.0], "horizon_months": [6.0]}
    )
    assert list(variants) == [
        "what-if:accepted_offer_value_sek=0",
        "what-if:accepted_offer_value_sek=600",
        "what-if:horizon_months=6",
    ]
    assert variants["what-if:accepted_offer_value_sek=600"] == replace(
        served, accepted_offer_value_sek=600.0
    )
    # Values that would print alike at six digits are two what-ifs, a value given twice one.
    close = what_if_objectives(
        served, {"accepted_offer_value_sek": [1_234_567.0, 1_234_568.0, 0.05, 0.05]}
    )
    assert list(close) == [
        "what-if:accepted_offer_value_sek=1234567",
        "what-if:accepted_offer_value_sek=1234568",
        "what-if:accepted_offer_value_sek=0.05",
    ]
    horizon = variants["what-if:horizon_months=6"]
    assert horizon.horizon_months == 6 and isinstance(horizon.horizon_months, int)
    assert horizon.accepted_offer_value_sek == 150.0  # the others as served
    refused = {
        "exploration_share": "not a setting of the objective",
        "weight_customer": "greater than or equal to 0",
        "horizon_months": "fractional part",
        "min_acceptance": "less than or equal to 1",
        "value_tolerance": "less than 1",
    }
    values = {
        "exploration_share": 0.5,
        "weight_customer": -1.0,
        "horizon_months": 6.5,
        "min_acceptance": 1.5,
        "value_tolerance": 1.0,
    }
    for setting, reason in refused.items():
        with pytest.raises(ValueError, match=reason) as raised:
            what_if_objectives(served, {setting: [values[setting]]})
        assert setting in str(raised.value)


@pytest.mark.integration
def test_what_if_replays_the_model_policy_with_one_setting_changed(
    simulated_world: SimulatedWorld,
) -> None:
    settings = simulated_world.settings
    served = Objective.from_settings(settings)
    configured = served.accepted_offer_value_sek
    firsts, earlier = logged_decisions(Path(settings.data_dir), None, 300, 2)
    variants = what_if_objectives(
        served,
        # The dear what-if last: a what-if valuing offers over the served objective would be
        # the last to write.
        {"min_acceptance": [1.0], "accepted_offer_value_sek": [configured, 0.0, 10_000.0]},
    )
    replayed = replay(
        firsts,
        earlier,
        settings,
        load_catalog(settings.catalog),
        load_champions(settings),
        served,
        what_if=variants,
    )
    assert len(replayed) > 200
    as_served = f"what-if:accepted_offer_value_sek={configured:g}"
    cheap, dear = "what-if:accepted_offer_value_sek=0", "what-if:accepted_offer_value_sek=10000"
    floor = "what-if:min_acceptance=1"
    moved = 0
    for item in replayed:
        # The setting as served decides as served: the same offers in the same order.
        assert item.shown[as_served] == item.shown["model"]
        # The accepted offer value orders the offers worth showing, never makes one worth it.
        assert bool(item.shown[cheap]) == bool(item.shown[dear])
        if item.shown[cheap] and item.profiled:
            # Worth more for any accepted offer, the first offer is at least as likely.
            cheap_first, dear_first = item.shown[cheap][0], item.shown[dear][0]
            chance = item.model_acceptance
            assert chance[dear_first] >= chance[cheap_first], item.decision_id
            moved += dear_first != cheap_first
        # The values the money terms read are the served objective's, whatever a what-if
        # valued: none holds the 10,000 kr the dear what-if adds to every offer of value.
        assert all(value < 10_000.0 for value in item.value_sek.values()), item.decision_id
        # No offer the model scored passes a floor of certain acceptance.
        if item.profiled:
            assert item.shown[floor] == []
    assert moved > 0  # the setting changes some first offers on this world
    report = evaluate_served_policies(
        settings,
        sample=300,
        seed=2,
        resamples=50,
        ablation=False,
        what_if={"accepted_offer_value_sek": [configured, 0.0]},
    )
    rows = report.what_if()
    assert set(rows) == {
        "served",
        f"accepted_offer_value_sek={configured:g}",
        "accepted_offer_value_sek=0",
    }
    assert rows[f"accepted_offer_value_sek={configured:g}"] == rows["served"]
    assert rows["served"]["lift_captured"] == report.policies["model"]["lift_captured"]
    assert "What if one setting of the objective" in report.markdown()
    assert "| accepted_offer_value_sek=0 |" in report.markdown()
    assert report.as_dict()["what_if"] == rows
