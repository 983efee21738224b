"""The served-policy report's figures on hand-built replays."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.policy_evaluation import (
    PolicyEvaluation,
    Replayed,
    _figures,
    evaluate_served_policies,
)
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
    served = {"model", "rules", "popularity", "random", "acceptance"}
    assert set(report.policies) == served | {f"lifted:{rule}" for rule in LIFTABLE}
    for name, figures in report.policies.items():
        assert 0.0 < figures["with_offer"] <= 1.0, name
        if name in served:  # a lifted rule may reach beyond what is eligible as served
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
    # The ablation: the model policy with each rule lifted in turn, as differences.
    assert set(report.ablation()) == LIFTABLE
    assert report.ablation()["below_acceptance_floor"]["with_offer"] >= 0.0
    assert "What each rule costs" in report.markdown()
