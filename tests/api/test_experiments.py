"""Experiments: creation rules, assignment, and the report's numbers on a hand-made log."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from serving.api.schemas import ExperimentCreate
from serving.decision.engine import decide
from serving.decision_log import DecisionLog, DecisionRecord, EventRecord, LoggedOffer
from serving.decision_log.consents import record_consent_change
from serving.decision_log.experiments import (
    customer_days,
    customer_outcomes,
    first_offers,
    insert_experiment,
    monthly_revenue_change,
)
from serving.decision_log.records import (
    ConsentChangeRecord,
    CustomerDay,
    Experiment,
    ExperimentSpec,
    Variant,
)
from serving.experiment_statistics import ratio_estimate, ratio_estimates_by_column
from serving.experiments import (
    ExperimentExists,
    ExperimentOverlaps,
    Experiments,
    assign_variant,
    covers,
    cumulative_results,
)
from tests.factories.api import FakeFeatures, auth, customers, log_decision, offers_body
from tests.factories.decision import (
    FakeFeatureSource,
    account,
    consent,
    heavy_user,
    make_catalog,
    profile,
    request,
)

MARKETING = auth("marketing")


def experiment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": "ranker-vs-rules",
        "description": "Does the ranker beat the rules?",
        "variants": [
            {"name": "treatment", "weight": 0.45, "policy": "model"},
            {"name": "rules", "weight": 0.45, "policy": "rules"},
            {"name": "control", "weight": 0.10, "policy": "holdout"},
        ],
        "start": "2026-12-01T00:00:00Z",
        "end": "2027-02-28T23:59:59Z",
    }
    body.update(overrides)
    return body


def spec() -> ExperimentSpec:
    """The experiment of ``experiment()`` as the experiments' logic takes it."""
    return ExperimentSpec(
        key="ranker-vs-rules",
        description="Does the ranker beat the rules?",
        variants=(
            Variant("treatment", 0.45, "model"),
            Variant("rules", 0.45, "rules"),
            Variant("control", 0.10, "holdout"),
        ),
        start=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        end=dt.datetime(2027, 2, 28, 23, 59, 59, tzinfo=dt.UTC),
    )


def test_an_experiment_is_created_201_and_listed(client: Any) -> None:
    response = client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    assert response.status_code == 201
    created = response.json()
    assert created["key"] == "ranker-vs-rules"
    assert created["start"] == "2026-12-01T00:00:00Z"
    listed = client.get("/v1/experiments", headers=MARKETING).json()
    assert listed["count"] == 1 and listed["data"][0]["variants"] == experiment()["variants"]
    assert client.get("/v1/experiments/ranker-vs-rules", headers=MARKETING).json() == created


def test_the_same_key_again_is_409(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    response = client.post(
        "/v1/experiments", json=experiment(description="again"), headers=MARKETING
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "an experiment with key ranker-vs-rules exists"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "model"},
                    {"name": "b", "weight": 0.4, "policy": "rules"},
                ]
            },
            "sum to 0.9",
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "model"},
                    {"name": "a", "weight": 0.5, "policy": "rules"},
                ]
            },
            "repeated: a",
        ),
        # Said in words, not as the pattern's regular expression.
        (
            {"variants": [{"name": "a", "weight": 1.0, "policy": "best"}]},
            "'best' is no policy: model, rules, non_personalised, holdout or model:<version>",
        ),
        # A weight is a JSON number, as max_offers and planned_customers are.
        ({"variants": [{"name": "a", "weight": "1", "policy": "rules"}]}, "valid number"),
        ({"variants": [{"name": "a", "weight": True, "policy": "rules"}]}, "valid number"),
        ({"variants": [{"name": "a", "weight": 1.0, "policy": "model:"}]}, "'model:' is no policy"),
        ({"variants": []}, "variants"),
        ({"start": "2027-03-01T00:00:00Z"}, "start must be before end"),
        # A number is not a time, though lax parsing would read it as seconds since 1970.
        ({"start": 0}, "ISO 8601"),
        ({"end": 1900000000}, "ISO 8601"),
        # The offset would move these past Python's first and last representable instants.
        ({"start": "0001-01-01T00:00:00+01:00"}, "between the years 1900 and 2999"),
        ({"end": "9999-12-31T23:59:59-01:00"}, "between the years 1900 and 2999"),
        ({"key": "with space"}, "key"),
        # PostgreSQL cannot store NUL in text; no control character belongs in a description.
        ({"description": "spring\u0000offer"}, "control characters (found U+0000"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_an_invalid_experiment_is_422_naming_the_problem(
    client: Any, change: dict[str, Any], named: str
) -> None:
    response = client.post("/v1/experiments", json=experiment(**change), headers=MARKETING)
    assert response.status_code == 422
    assert named in response.json()["detail"]


def test_weights_may_miss_one_by_rounding_only() -> None:
    thirds = [{"name": n, "weight": 1 / 3, "policy": "rules"} for n in ("a", "b", "c")]
    assert len(ExperimentCreate.model_validate(experiment(variants=thirds)).variants) == 3
    off = [
        {"name": "a", "weight": 0.5 + 1e-8, "policy": "rules"},
        {"name": "b", "weight": 0.5, "policy": "rules"},
    ]
    with pytest.raises(ValueError, match="sum to 1"):
        ExperimentCreate.model_validate(experiment(variants=off))


def test_a_challenger_policy_names_a_version() -> None:
    body = ExperimentCreate.model_validate(
        experiment(variants=[{"name": "new", "weight": 1.0, "policy": "model:4"}])
    )
    assert body.variants[0].policy == "model:4"


def test_assignment_is_stable_and_follows_the_weights() -> None:
    variants = spec().variants
    assigned = [
        assign_variant("ranker-vs-rules", f"C{i:06d}", variants).name for i in range(20_000)
    ]
    again = [assign_variant("ranker-vs-rules", f"C{i:06d}", variants).name for i in range(20_000)]
    assert assigned == again
    shares = {name: count / 20_000 for name, count in Counter(assigned).items()}
    assert shares == pytest.approx({"treatment": 0.45, "rules": 0.45, "control": 0.10}, abs=0.012)
    other = [assign_variant("other-key", f"C{i:06d}", variants).name for i in range(2_000)]
    assert other != assigned[:2_000]  # another experiment splits customers independently


def test_an_invoice_date_is_covered_from_start_to_end() -> None:
    defined = spec()
    assert not covers(defined, dt.date(2026, 11, 30))
    assert covers(defined, dt.date(2026, 12, 1))
    assert covers(defined, dt.date(2027, 2, 28))
    assert not covers(defined, dt.date(2027, 3, 1))


def hand_made_log(log: DecisionLog) -> None:
    """treatment (model): T0 has 4 decisions, all accepted (a plan costing 50 SEK a month more),
    T1–T3 4 decisions each, none accepted; rules: R0–R7 one decision each, R0 and R1 accepted
    (R0's plan saves 20 SEK a month, R1's offer has neither a logged saving nor a fee change, as
    decisions logged before fee changes were kept); control (holdout): K0, K1,
    no offers. Every decision with offers has an impression and a click."""
    for customer in range(4):
        for _ in range(4):
            log_decision(log, "treatment", f"T{customer}", accepted=customer == 0, saving=-50.0)
    for customer in range(8):
        log_decision(
            log,
            "rules",
            f"R{customer}",
            accepted=customer < 2,
            saving=20.0 if customer == 0 else None,
        )
    for customer in range(2):
        log_decision(log, "control", f"K{customer}", accepted=False, offers=0)
    log_decision(log, "other", "X1", accepted=True)  # not a variant of it: not reported


def test_the_report_counts_customers_against_the_champion_variant(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    log = client.app.state.services.log
    hand_made_log(log)
    record_consent_change(
        log,
        ConsentChangeRecord(
            "withdrawn-1",
            "T1",
            "marketing",
            False,
            dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
            dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
        ),
    )

    response = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING)
    assert response.status_code == 200
    report = response.json()
    # The champion policy's variant is the control unless another is named.
    assert (report["control"], report["confidence"], report["customers"]) == ("treatment", 0.95, 14)
    assert (report["layer"], report["stopped_at"], report["churn_window_days"]) == (
        "default",
        None,
        90,
    )
    rows = {row["name"]: row for row in report["variants"]}
    assert list(rows) == ["treatment", "rules", "control"]
    treatment, rules, control = rows["treatment"], rows["rules"], rows["control"]
    assert (treatment["customers"], treatment["decisions"], treatment["accepted"]) == (4, 16, 4)
    assert (treatment["offers_shown"], treatment["impressions"], treatment["clicks"]) == (
        32,
        16,
        16,
    )
    assert treatment["impressions_per_customer"] == 4.0 and treatment["click_rate"] == 1.0
    # 4 of 16 decisions, but all 4 from one customer of four: residuals yᵢ - R·nᵢ are 3, -1, -1,
    # -1; Var = 4/3 · 12 / 16² = 0.0625, so the interval is 0.25 ± 1.96 · 0.25. Counted as 16
    # independent decisions (Wilson) it would be 10.2 %–49.5 %.
    assert treatment["acceptance_rate"] == pytest.approx(0.25)
    assert treatment["acceptance_interval"] == pytest.approx(
        {"low": 0.25 - 0.489991, "high": 0.25 + 0.489991}, abs=1e-6
    )
    # Revenue a month per customer: T0 pays 4 × 50 more, the others nothing: mean 50, SE 50.
    assert treatment["revenue_change_sek_per_customer"] == pytest.approx(50.0)
    assert treatment["revenue_change_interval"] == pytest.approx(
        {"low": 50 - 97.998199, "high": 50 + 97.998199}, abs=1e-5
    )
    assert (treatment["objections"], treatment["objection_rate"]) == (1, 0.25)
    assert treatment["difference"] is None and treatment["differences"] == {}
    assert treatment["churn"] is None  # no contracts table in this test's data folder

    # rules: 2 of 8 customers with one decision each; Var = 8/7 · 1.5 / 8² = 0.0267857.
    assert (rules["customers"], rules["decisions"], rules["accepted"]) == (8, 8, 2)
    assert rules["acceptance_interval"] == pytest.approx(
        {"low": 0.25 - 0.320774, "high": 0.25 + 0.320774}, abs=1e-6
    )
    assert rules["revenue_change_sek_per_customer"] == pytest.approx(-2.5)
    difference = rules["difference"]
    assert difference == rules["differences"]["acceptance_rate"]
    assert difference["against"] == "treatment" and difference["value"] == pytest.approx(0.0)
    # SE of the difference √(0.0625 + 0.0267857) = 0.298807.
    assert difference["interval"] == pytest.approx({"low": -0.585651, "high": 0.585651}, abs=1e-6)
    assert difference["p_value"] == pytest.approx(1.0)
    revenue = rules["differences"]["revenue_change_sek_per_customer"]
    assert revenue["value"] == pytest.approx(-52.5)
    assert set(rules["differences"]) == {
        "click_rate",
        "acceptance_rate",
        "revenue_change_sek_per_customer",
        "objection_rate",
    }
    assert rules["differences"]["objection_rate"]["value"] == pytest.approx(-0.25)

    assert (control["customers"], control["offers_shown"], control["acceptance_rate"]) == (
        2,
        0,
        0.0,
    )
    assert control["click_rate"] == 0.0

    # (4 - 6.3)²/6.3 + (8 - 6.3)²/6.3 + (2 - 1.4)²/1.4 = 1.555556; p = exp(-1.555556 / 2).
    srm = report["srm"]
    assert srm["observed"] == {"treatment": 4, "rules": 8, "control": 2}
    assert srm["expected"] == pytest.approx({"treatment": 6.3, "rules": 6.3, "control": 1.4})
    assert srm["chi_square"] == pytest.approx(1.555556, abs=1e-6)
    assert srm["p_value"] == pytest.approx(0.459426, abs=1e-6) and srm["failed"] is False
    # (z₀.₉₇₅ + z₀.₈) · 0.298807; against the holdout, whose acceptance is 0 by construction and
    # has no variance, (z₀.₉₇₅ + z₀.₈) · 0.25.
    mde = report["mde"]
    assert (mde["metric"], mde["alpha"], mde["power"]) == (
        "acceptance_rate",
        0.05,
        0.8,
    )
    assert mde["by_variant"]["rules"] == pytest.approx(0.837134, abs=1e-6)
    assert mde["by_variant"]["control"] == pytest.approx(0.700396, abs=1e-6)

    warnings = report["warnings"]
    assert warnings[0].startswith("Churn is not reported: the contracts table could not be read")
    assert warnings[1] == (
        "1 accepted offers had neither a logged saving nor a fee change (decided before fee "
        "changes were logged, or with today's plan fee unknown) and count 0 in the revenue "
        "change."
    )

    page = client.get("/experiments/ranker-vs-rules", headers=MARKETING)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<table" in page.text and "<script" not in page.text
    assert "25.0 %" in page.text and "-24.0 % – 74.0 %" in page.text
    assert "Churn is not reported" in page.text
    # Every metric against the control: rules' acceptance rate, 0 ± 58.6 pp, p = 1.
    assert '<table id="differences">' in page.text and "-58.6 pp to +58.6 pp" in page.text


def test_the_ratio_variance_is_the_customer_clustered_one() -> None:
    """The delta-method variance equals statsmodels' cluster-robust (CR1) variance of the same
    mean with customers as clusters, and differs from the decision-level one."""
    import numpy as np
    import statsmodels.api as sm

    # Customers with 1–6 decisions; acceptance strongly shared within a customer.
    decisions = [6, 1, 3, 5, 2, 4, 6, 1, 2, 3]
    accepted = [6, 0, 3, 0, 0, 4, 0, 1, 0, 0]
    estimate = ratio_estimate(accepted, decisions)
    assert estimate is not None
    outcome = np.concatenate(
        [[1.0] * a + [0.0] * (n - a) for a, n in zip(accepted, decisions, strict=True)]
    )
    groups = np.concatenate([[i] * n for i, n in enumerate(decisions)])
    fitted = sm.OLS(outcome, np.ones_like(outcome)).fit(
        cov_type="cluster", cov_kwds={"groups": groups}
    )
    assert estimate.value == pytest.approx(float(fitted.params[0]))
    assert estimate.variance == pytest.approx(float(fitted.bse[0]) ** 2, rel=1e-9)
    rate = sum(accepted) / sum(decisions)
    independent = rate * (1 - rate) / sum(decisions)
    assert estimate.variance > 2 * independent  # treating decisions as independent is too narrow


def test_one_customer_alone_has_no_interval() -> None:
    single = ratio_estimate([1], [3])
    assert single is not None and single.value == pytest.approx(1 / 3)
    assert single.interval() is None
    assert ratio_estimate([], []) is None and ratio_estimate([0], [0]) is None


def test_a_sample_ratio_mismatch_is_the_first_warning(client: Any) -> None:
    body = experiment(
        variants=[
            {"name": "treatment", "weight": 0.5, "policy": "model"},
            {"name": "rules", "weight": 0.5, "policy": "rules"},
        ],
        planned_customers=1000,
    )
    assert client.post("/v1/experiments", json=body, headers=MARKETING).status_code == 201
    log = client.app.state.services.log
    for customer in range(60):
        log_decision(log, "treatment", f"T{customer}", accepted=customer % 3 == 0)
    for customer in range(20):
        log_decision(log, "rules", f"R{customer}", accepted=customer % 4 == 0)
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    # (60 - 40)²/40 · 2 = 20, p = exp(-10).
    assert report["srm"]["chi_square"] == pytest.approx(20.0)
    assert report["srm"]["p_value"] == pytest.approx(7.744e-6, rel=1e-3)
    assert report["srm"]["failed"] is True
    assert report["warnings"][0].startswith(
        "Sample ratio mismatch: customers per variant (treatment 60, rules 20) do not follow the "
        "weights (chi-square 20.0, p = 7.7e-06)."
    )
    assert report["warnings"][1].startswith(
        "Read before the planned sample: 80 of 1000 customers enrolled."
    )


def test_churn_is_read_from_the_contracts_table(tmp_path: Any) -> None:
    import pandas as pd

    from serving.experiments import build_report, contract_exits
    from tests.factories.features import write_tables

    # T0 leaves 30 days after its first decision, T1 after 120 (outside the 90-day window), T2
    # stays; R0 leaves within the window; R1's first decision is too recent to be followed.
    day = pd.Timestamp
    contracts = pd.DataFrame(
        {
            "customer_id": ["T0", "T1", "T2", "R0", "R1", "Z9"],
            "plan_id": ["PLAN_15GB"] * 6,
            "valid_from": [day("2025-01-01")] * 6,
            "valid_to": [
                day("2026-01-31"),
                day("2026-05-01"),
                None,
                day("2026-02-15"),
                None,
                day("2026-06-30"),
            ],
            "binding_end_date": [None] * 6,
            "monthly_fee_sek": [199.0] * 6,
        }
    )
    write_tables({"contracts": contracts}, tmp_path)
    exits = contract_exits(tmp_path)
    assert exits.known_through == dt.date(2026, 6, 30)
    assert exits.exits["T0"] == dt.date(2026, 1, 31) and "T2" not in exits.exits

    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    january = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for customer in ("T0", "T1", "T2"):
        log_decision(log, "treatment", customer, accepted=False, at=january)
    log_decision(log, "rules", "R0", accepted=False, at=january)
    log_decision(log, "rules", "R1", accepted=False, at=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    stored = Experiment(
        **{name: getattr(two_variants(), name) for name in ExperimentSpec.__dataclass_fields__},
        created_at=january,
    )
    report = build_report(
        stored, customer_outcomes(log, "ranker-vs-rules"), now=january, exits=exits
    )
    treatment, rules = report.variants
    assert treatment.churn is not None and rules.churn is not None
    assert (treatment.churn.followed, treatment.churn.churned) == (3, 1)
    assert treatment.churn.rate == pytest.approx(1 / 3)
    assert (rules.churn.followed, rules.churn.churned, rules.churn.rate) == (1, 1, 1.0)
    churn = rules.differences["churn_rate"]
    assert churn.value == pytest.approx(2 / 3) and churn.p_value is not None
    log.close()


def two_variants(**overrides: Any) -> ExperimentSpec:
    values: dict[str, Any] = {
        "key": "ranker-vs-rules",
        "description": "",
        "variants": (Variant("treatment", 0.5, "model"), Variant("rules", 0.5, "rules")),
        "start": dt.datetime(2025, 12, 1, tzinfo=dt.UTC),
        "end": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    }
    values.update(overrides)
    return ExperimentSpec(**values)


def test_without_decisions_the_report_has_no_rates(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert all(
        row["decisions"] == 0 and row["acceptance_rate"] is None for row in report["variants"]
    )
    assert report["srm"] is None and report["mde"]["by_variant"] == {"rules": None, "control": None}
    assert "The control treatment has no customers yet: nothing is compared." in report["warnings"]
    page = client.get("/experiments/ranker-vs-rules", headers=MARKETING)
    assert page.status_code == 200


def test_the_control_is_named_or_the_champion_policy() -> None:
    from serving.experiments import control_variant

    assert control_variant(spec()).name == "treatment"
    assert control_variant(replace(spec(), control="control")).name == "control"
    no_model = replace(spec(), variants=(Variant("a", 0.5, "rules"), Variant("b", 0.5, "holdout")))
    assert control_variant(no_model).name == "a"


def test_a_named_control_is_compared_against(client: Any) -> None:
    body = experiment(control="control")
    created = client.post("/v1/experiments", json=body, headers=MARKETING)
    assert created.status_code == 201 and created.json()["control"] == "control"
    log = client.app.state.services.log
    hand_made_log(log)
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert report["control"] == "control"
    treatment = report["variants"][0]
    # Against the holdout (0 by construction, no variance): the treatment's own interval.
    assert treatment["difference"]["value"] == pytest.approx(0.25)
    assert treatment["difference"]["interval"] == pytest.approx(
        {"low": 0.25 - 0.489991, "high": 0.25 + 0.489991}, abs=1e-6
    )


@pytest.mark.parametrize(
    "path", ["/v1/experiments/nope/report", "/v1/experiments/nope", "/experiments/nope"]
)
def test_an_unknown_experiment_is_404(client: Any, path: str) -> None:
    response = client.get(path, headers=MARKETING)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "no experiment with key nope"


def test_an_overlapping_experiment_in_the_same_layer_is_409_naming_it(client: Any) -> None:
    assert client.post("/v1/experiments", json=experiment(), headers=MARKETING).status_code == 201
    second = experiment(key="second", start="2027-02-01T00:00:00Z", end="2027-03-31T00:00:00Z")
    response = client.post("/v1/experiments", json=second, headers=MARKETING)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:invoice-offers:problem:experiment-overlaps"
    assert problem["detail"].startswith(
        "experiment ranker-vs-rules in layer default runs from 2026-12-01T00:00:00Z to "
        "2027-02-28T23:59:59Z"
    )
    # After it, or in another layer, it is accepted.
    later = {**second, "start": "2027-03-01T00:00:00Z"}
    assert client.post("/v1/experiments", json=later, headers=MARKETING).status_code == 201
    other_layer = experiment(key="third", layer="payment-help")
    created = client.post("/v1/experiments", json=other_layer, headers=MARKETING)
    assert created.status_code == 201 and created.json()["layer"] == "payment-help"
    assert client.get("/v1/experiments", headers=MARKETING).json()["count"] == 3
    # One invoice has one policy: the experiment created first decides, and the later one's
    # report says so.
    report = client.get("/v1/experiments/third/report", headers=MARKETING).json()
    assert (
        "Experiment ranker-vs-rules of layer default, created earlier, runs from 2026-12-01 to "
        "2027-02-28: the invoices both cover are decided under it, so this experiment enrols "
        "nobody while it runs."
    ) in report["warnings"]
    first = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert not any("created earlier" in warning for warning in first["warnings"])


def test_a_stopped_experiment_assigns_nobody_and_says_so(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(start="2026-01-01T00:00:00Z"), headers=MARKETING)
    experiments = client.app.state.services.experiments
    assert experiments.running_on(dt.date(2026, 12, 10)) is not None

    response = client.post("/v1/experiments/ranker-vs-rules/stop", headers=MARKETING)
    assert response.status_code == 200
    stopped_at = response.json()["stopped_at"]
    assert stopped_at is not None
    assert experiments.running_on(dt.date(2026, 12, 10)) is None
    again = client.post("/v1/experiments/ranker-vs-rules/stop", headers=MARKETING)
    assert again.status_code == 200 and again.json()["stopped_at"] == stopped_at

    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert report["status"] == "stopped" and report["stopped_at"] == stopped_at
    assert any(warning.startswith("Stopped at ") for warning in report["warnings"])
    # Its layer is free again from the moment it stopped.
    follow_up = experiment(
        key="follow-up", start="2027-01-01T00:00:00Z", end="2027-03-31T00:00:00Z"
    )
    assert client.post("/v1/experiments", json=follow_up, headers=MARKETING).status_code == 201

    unknown = client.post("/v1/experiments/nope/stop", headers=MARKETING)
    assert unknown.status_code == 404
    assert (
        client.post("/v1/experiments/ranker-vs-rules/stop", headers=auth("renderer")).status_code
        == 403
    )


def test_a_stop_with_a_body_is_422_and_stops_nothing(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(start="2026-01-01T00:00:00Z"), headers=MARKETING)
    path = "/v1/experiments/ranker-vs-rules/stop"
    refused = client.post(path, json={"reason": "done", "at": "2027-01-01"}, headers=MARKETING)
    assert refused.status_code == 422
    assert refused.json()["detail"] == "this route takes no body"
    assert client.app.state.services.experiments.running_on(dt.date(2026, 12, 10)) is not None
    # Many clients send an empty object with every POST: that is no body.
    assert client.post(path, json={}, headers=MARKETING).status_code == 200
    # The key is checked first: a caller without one learns nothing about the body.
    assert client.post(path, json={"reason": "done"}).status_code == 401


def test_an_ended_experiment_cannot_be_stopped(client: Any) -> None:
    ended = experiment(start="2020-01-01T00:00:00Z", end="2020-02-01T00:00:00Z")
    assert client.post("/v1/experiments", json=ended, headers=MARKETING).status_code == 201
    response = client.post("/v1/experiments/ranker-vs-rules/stop", headers=MARKETING)
    assert response.status_code == 409
    assert response.json()["type"] == "urn:invoice-offers:problem:experiment-ended"


def test_layers_split_customers_independently() -> None:
    variants = (Variant("a", 0.5, "model"), Variant("b", 0.5, "rules"))
    customers = [f"C{i:06d}" for i in range(4_000)]
    default = [assign_variant("k", c, variants).name for c in customers]
    # The default layer hashes (key, customer) as before layers existed: stored experiments keep
    # their customers where they were.
    assert default[:8] == [assign_variant("k", c, variants, "default").name for c in customers[:8]]
    import hashlib

    first = int.from_bytes(hashlib.sha256(b"k\x1fC000000").digest()[:8], "big") / 2.0**64
    assert default[0] == ("a" if first < 0.5 else "b")
    layered = [assign_variant("k", c, variants, "pricing").name for c in customers]
    together = Counter(zip(default, layered, strict=True))
    # Independent halves: each of the four combinations holds about a quarter.
    assert all(abs(count / 4_000 - 0.25) < 0.03 for count in together.values())
    assert len(together) == 4


def test_an_experiment_is_stored_and_read_back_as_created(tmp_path: Any) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    store = Experiments(log)
    created = store.create(replace(spec(), layer="pricing", control="rules", planned_customers=500))
    assert isinstance(created, Experiment) and created.created_at.tzinfo == dt.UTC
    assert (created.key, created.variants, created.start, created.layer) == (
        "ranker-vs-rules",
        spec().variants,
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        "pricing",
    )
    assert (created.control, created.planned_customers, created.stopped_at) == ("rules", 500, None)
    assert store.get("ranker-vs-rules") == created
    assert store.all() == [created]
    with pytest.raises(ExperimentExists):
        store.create(spec())
    assert insert_experiment(log, created) is False  # the key is taken: nothing stored
    with pytest.raises(KeyError):
        store.get("nope")
    log.close()


def test_a_log_from_before_layers_keeps_its_experiments(tmp_path: Any) -> None:
    import sqlalchemy as sa

    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE experiments (key VARCHAR(64) PRIMARY KEY, description TEXT NOT NULL, "
                "variants JSON NOT NULL, starts_at DATETIME NOT NULL, ends_at DATETIME NOT NULL, "
                "created_at DATETIME NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO experiments VALUES ('old-one', 'stored before layers', "
                '\'[{"name": "a", "weight": 1.0, "policy": "rules"}]\', '
                "'2026-12-01 00:00:00.000000', '2027-01-31 00:00:00.000000', "
                "'2026-11-20 10:00:00.000000')"
            )
        )
    engine.dispose()
    log = DecisionLog(f"sqlite:///{path}")
    store = Experiments(log)
    old = store.get("old-one")
    assert (old.layer, old.control, old.planned_customers, old.stopped_at) == (
        "default",
        None,
        None,
        None,
    )
    assert old.variants == (Variant("a", 1.0, "rules"),)
    assert old.end == dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
    running = store.running_on(dt.date(2026, 12, 10))
    assert running is not None and running.key == "old-one"
    with pytest.raises(ExperimentOverlaps):  # it still holds its layer
        store.create(replace(spec(), key="new-one"))
    assert store.stop("old-one").stopped_at is not None
    log.close()


def test_customer_outcomes_come_from_the_logged_decisions_and_events(tmp_path: Any) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    for number in range(3):
        log_decision(
            log, "treatment", "C1" if number < 2 else "C2", accepted=number == 0, saving=12.5
        )
    log_decision(log, "control", "C3", accepted=False, offers=0)
    log_decision(log, "treatment", "C4", accepted=True, experiment="another")
    outcomes = {(o.variant, o.customer_id): o for o in customer_outcomes(log, "ranker-vs-rules")}
    assert set(outcomes) == {("treatment", "C1"), ("treatment", "C2"), ("control", "C3")}
    first = outcomes["treatment", "C1"]
    assert (
        first.decisions,
        first.offers_shown,
        first.impressions,
        first.clicked,
        first.accepted,
    ) == (
        2,
        4,
        2,
        2,
        1,
    )
    assert first.revenue_change_sek == pytest.approx(-12.5) and first.unpriced_accepts == 0
    assert first.first_decided_at == dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    assert outcomes["control", "C3"].offers_shown == 0
    assert customer_outcomes(log, "nope") == []
    log.close()


def test_a_segment_list_accept_changes_revenue_by_the_catalog_fee_difference(
    tmp_path: Any,
) -> None:
    """A customer without profiling consent on the legacy Mobil 10 GB (229 kr) is decided by
    the engine (the segment's fixed list, no usage read) and accepts the featured Mobil 15 GB,
    which includes more for less, shown at its new-customer price of 219 kr: the report's revenue
    change is 219 - 229 = -10 kr a month, priced, not counted 0."""
    source = FakeFeatureSource(
        consent_row=consent(profiling=False),
        account_row=account(
            current_plan_id="PLAN_10GB_LEGACY",
            current_monthly_fee_sek=229.0,
            current_new_customer_fee_sek=float("nan"),
            current_data_gb=10.0,
            current_roaming_data_gb=3.0,
        ),
    )
    decision = decide(
        request(),
        source,
        make_catalog(),
        policy="model",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert decision.policy == "non_personalised"
    assert [offer.offer_id for offer in decision.offers] == ["PLAN_15GB"]
    assert all(offer.customer_saving_sek_per_month is None for offer in decision.offers)
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    now = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    log.record(
        DecisionRecord(
            decision_id="D1",
            invoice_id=decision.invoice_id,
            customer_id=decision.customer_id,
            invoice_date=decision.invoice_date,
            created_at=now,
            policy=decision.policy,
            model_version=None,
            experiment_key="ranker-vs-rules",
            experiment_variant="treatment",
            degraded=None,
            consent={"marketing": True},
            response_json="{}",
            log=decision.log_details(),
            offers=tuple(LoggedOffer(o.offer_id, o.rank, 1.0, None) for o in decision.offers),
        )
    )
    log.record_event(EventRecord("A-D1", "D1", "PLAN_15GB", "accept", now, now))
    (outcome,) = customer_outcomes(log, "ranker-vs-rules")
    assert outcome.accepted == 1 and outcome.unpriced_accepts == 0
    assert outcome.revenue_change_sek == pytest.approx(219.0 - 229.0)
    # A loyalty price, had one been taken (Mobil 15 GB at 249 kr, 219 kr for new customers):
    # the new-customer price of the customer's plan against today's fee.
    loyal = decide(
        request(),
        FakeFeatureSource(consent_row=consent(profiling=False), account_row=account()),
        make_catalog(),
        policy="model",
        scorer=None,
        recently_declined=frozenset(),
    )
    assert "LOYALTY_NEW_PRICE" in [offer.offer_id for offer in loyal.offers]
    assert monthly_revenue_change(loyal.log_details(), "LOYALTY_NEW_PRICE") == 219.0 - 249.0
    log.close()


def test_running_experiments_are_cached_and_refreshed(tmp_path: Any) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    now = [0.0]
    store = Experiments(log, refresh_seconds=5.0, clock=lambda: now[0])
    day = dt.date(2026, 12, 10)
    assert store.running_on(day) is None
    # Another replica creates it: not seen until the cache is refreshed.
    Experiments(log).create(spec())
    assert store.running_on(day) is None
    now[0] = 6.0
    running_now = store.running_on(day)
    assert running_now is not None and running_now.key == "ranker-vs-rules"
    log.close()


@pytest.fixture
def features() -> FakeFeatures:
    """The few customers, and C0005 who granted marketing once and objected since."""
    rows = customers()
    rows["C0005"] = (consent(objected=True, marketing=False), heavy_user(), profile())
    return FakeFeatures(rows)


def test_only_customers_who_may_be_marketed_to_are_enrolled(client: Any) -> None:
    body = experiment(
        start="2026-11-01T00:00:00Z",
        variants=[{"name": "everyone", "weight": 1.0, "policy": "rules"}],
    )
    assert client.post("/v1/experiments", json=body, headers=MARKETING).status_code == 201
    answers = {}
    for number, customer in enumerate(("C0001", "C0003", "C0004", "C0005")):
        response = client.post(
            "/v1/offers",
            json=offers_body(invoice_id=f"INV-{number}", customer_id=customer),
            headers=auth("renderer"),
        )
        assert response.status_code == 200
        answers[customer] = response.json()
    assert answers["C0001"]["experiment"] == {"key": "ranker-vs-rules", "variant": "everyone"}
    assert answers["C0003"]["experiment"] == {"key": "ranker-vs-rules", "variant": "everyone"}
    # No marketing consent, or an objection: no offers, and in no experiment.
    for customer in ("C0004", "C0005"):
        assert answers[customer]["policy"] == "none"
        assert answers[customer]["experiment"] is None
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    assert report["customers"] == 2 and report["variants"][0]["decisions"] == 2


@pytest.mark.integration
@pytest.mark.postgres
def test_experiments_on_postgresql(postgres_url: str, pg_schema: str) -> None:
    """The same SQL on PostgreSQL: a table from before layers gains its columns, the write lock,
    the overlap, the stop and the per-customer outcomes."""
    import sqlalchemy as sa

    from serving.decision_log.database import create_log_engine

    engine = create_log_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f'CREATE TABLE "{pg_schema}".experiments (key VARCHAR(64) PRIMARY KEY, '
                "description TEXT NOT NULL, variants JSON NOT NULL, starts_at TIMESTAMP NOT NULL, "
                "ends_at TIMESTAMP NOT NULL, created_at TIMESTAMP NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                f"INSERT INTO \"{pg_schema}\".experiments VALUES ('old-one', '', "
                '\'[{"name": "a", "weight": 1.0, "policy": "rules"}]\', '
                "'2020-01-01', '2020-02-01', '2019-12-20')"
            )
        )
    engine.dispose()
    log = DecisionLog(postgres_url, schema=pg_schema)
    store = Experiments(log)
    assert store.get("old-one").layer == "default"
    store.create(spec())
    with pytest.raises(ExperimentOverlaps):
        store.create(replace(spec(), key="second"))
    hand_made_log(log)
    outcomes = {(o.variant, o.customer_id): o for o in customer_outcomes(log, "ranker-vs-rules")}
    assert len(outcomes) == 15  # with the customer of a variant the experiment does not have
    first = outcomes["treatment", "T0"]
    assert (first.decisions, first.accepted, first.impressions) == (4, 4, 4)
    assert first.revenue_change_sek == pytest.approx(200.0)
    assert outcomes["rules", "R1"].unpriced_accepts == 1
    report = store.report("ranker-vs-rules")
    treatment = report.variants[0]
    assert treatment.acceptance_interval is not None
    assert treatment.acceptance_interval.high == pytest.approx(0.25 + 0.489991, abs=1e-6)
    # Per invoice date (PostgreSQL answers dates, SQLite text): the same decisions and accepts.
    days = customer_days(log, "ranker-vs-rules")
    assert all(type(row.day) is dt.date for row in days)
    assert sum(row.decisions for row in days) == sum(o.decisions for o in outcomes.values())
    assert sum(row.accepted for row in days) == sum(o.accepted for o in outcomes.values())
    assert report.cumulative.series[0].points[-1].acceptance_rate == treatment.acceptance_rate
    total, firsts = first_offers(log, "ranker-vs-rules")
    assert total == sum(o.decisions for o in outcomes.values())
    assert len(firsts) == sum(o.decisions for o in outcomes.values() if o.offers_shown)
    stopped = store.stop("ranker-vs-rules")
    assert stopped.stopped_at is not None and store.running_on(dt.date(2026, 12, 10)) is None
    log.close()


def _day(variant: str, customer: str, day: int, decisions: int, accepted: int) -> CustomerDay:
    return CustomerDay(variant, customer, dt.date(2026, 12, day), decisions, accepted, accepted)


def test_cumulative_acceptance_is_the_report_computed_up_to_each_day() -> None:
    days = [
        _day("treatment", "T1", 1, 1, 1),
        _day("treatment", "T2", 1, 1, 0),
        _day("control", "K1", 1, 1, 0),
        _day("control", "K2", 1, 1, 1),
        _day("treatment", "T1", 2, 1, 0),
        _day("treatment", "T3", 2, 2, 2),
        _day("control", "K1", 2, 1, 0),
        _day("other", "X1", 2, 5, 5),  # a variant not in the experiment is left out
    ]
    results = cumulative_results(["treatment", "control"], "control", days)
    assert (results.metric, results.period) == ("acceptance_rate", "day")
    series = {line.variant: line.points for line in results.series}
    assert list(series) == ["treatment", "control"]
    first, second = series["treatment"]
    assert [point.through for point in series["control"]] == [
        dt.date(2026, 12, 1),
        dt.date(2026, 12, 2),
    ]
    # Through 1 December: 1 of 2 decisions, one per customer: Var = 2/1 · (0.5² + 0.5²) / 2² =
    # 0.25, so 0.5 ± 1.96 · 0.5; the control is the same, so the difference is 0.
    assert (first.customers, first.decisions, first.accepted) == (2, 2, 1)
    assert first.acceptance_rate == 0.5
    assert first.interval is not None
    assert (first.interval.low, first.interval.high) == pytest.approx((-0.479982, 1.479982))
    assert first.difference is not None and first.difference.value == 0.0
    # Through 2 December: T1 2 decisions 1 accepted, T2 1/0, T3 2/2: R = 3/5, residuals -0.2,
    # -0.6, 0.8, Var = 3/2 · 1.04 / 25 = 0.0624. Control K1 2/0, K2 1/1: R = 1/3,
    # Var = 2 · (8/9) / 9 = 16/81. Difference 0.26667 ± 1.96 · √0.259931, p = 0.6009.
    assert (second.customers, second.decisions, second.accepted) == (3, 5, 3)
    assert second.acceptance_rate == pytest.approx(0.6)
    assert second.interval is not None
    assert second.interval.low == pytest.approx(0.6 - 1.959964 * 0.0624**0.5)
    assert second.difference is not None and second.difference.interval is not None
    assert second.difference.against == "control"
    assert second.difference.value == pytest.approx(0.6 - 1 / 3)
    assert second.difference.interval.high == pytest.approx(
        0.6 - 1 / 3 + 1.959964 * (0.0624 + 16 / 81) ** 0.5
    )
    assert second.difference.p_value == pytest.approx(0.6009, abs=1e-4)
    assert series["control"][1].difference is None
    assert series["control"][1].acceptance_rate == pytest.approx(1 / 3)


def test_cumulative_results_go_by_week_over_a_long_experiment() -> None:
    days = [
        _day("treatment", "T1", 1, 1, 1),  # a Tuesday: its week ends on Sunday 6 December
        CustomerDay("treatment", "T2", dt.date(2027, 1, 5), 1, 0, 0),
    ]
    results = cumulative_results(["treatment", "control"], "control", days)
    assert results.period == "week"
    treatment, control = results.series
    assert [point.through for point in treatment.points] == [
        dt.date(2026, 12, 6),
        dt.date(2027, 1, 10),
    ]
    assert [point.acceptance_rate for point in treatment.points] == [1.0, 0.5]
    # The control has no decisions yet: no rate, and nothing to compare against.
    assert [point.acceptance_rate for point in control.points] == [None, None]
    assert treatment.points[1].difference is None
    assert cumulative_results(["treatment"], "treatment", []).series[0].points == ()


def test_the_report_json_carries_the_cumulative_series(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    log = client.app.state.services.log
    for day, accepted in ((3, True), (3, False), (4, True)):
        at = dt.datetime(2026, 12, day, tzinfo=dt.UTC)
        log_decision(log, "treatment", f"T{day}", accepted=accepted, at=at)
        log_decision(log, "rules", f"R{day}", accepted=False, at=at)
    report = client.get("/v1/experiments/ranker-vs-rules/report", headers=MARKETING).json()
    cumulative = report["cumulative"]
    assert (cumulative["metric"], cumulative["period"], cumulative["control"]) == (
        "acceptance_rate",
        "day",
        "treatment",
    )
    series = {line["variant"]: line["points"] for line in cumulative["series"]}
    assert [p["through"] for p in series["treatment"]] == ["2026-12-03", "2026-12-04"]
    assert [(p["decisions"], p["accepted"]) for p in series["treatment"]] == [(2, 1), (3, 2)]
    assert [p["acceptance_rate"] for p in series["rules"]] == [0.0, 0.0]
    assert series["rules"][1]["difference"]["value"] == pytest.approx(-2 / 3)
    # The last point is the whole report's figure.
    rows = {row["name"]: row for row in report["variants"]}
    assert series["treatment"][-1]["acceptance_rate"] == rows["treatment"]["acceptance_rate"]
    assert series["treatment"][-1]["interval"] == pytest.approx(
        rows["treatment"]["acceptance_interval"]
    )


def test_the_ratio_by_column_is_the_ratio_of_each_column() -> None:
    rng = np.random.default_rng(5)
    decided = rng.integers(0, 4, (40, 6)).cumsum(axis=1).astype(float)
    accepted = np.minimum(decided, rng.integers(0, 3, (40, 6)).cumsum(axis=1))
    decided[:, 0] = 0  # no decision yet on the first date: no estimate
    accepted[:, 0] = 0
    by_column = ratio_estimates_by_column(accepted, decided)
    assert by_column[0] is None
    for column in range(1, 6):
        counted = decided[:, column] > 0  # customers without a decision yet are not counted
        alone = ratio_estimate(accepted[counted, column], decided[counted, column])
        found = by_column[column]
        assert alone is not None and found is not None
        assert found.value == pytest.approx(alone.value, rel=1e-12)
        assert found.variance == pytest.approx(alone.variance, rel=1e-12)
    single = ratio_estimates_by_column(np.array([[1.0]]), np.array([[2.0]]))[0]
    assert single is not None and single.value == 0.5 and math.isnan(single.variance)


def test_the_page_of_an_experiment_without_decisions_says_so(client: Any) -> None:
    client.post("/v1/experiments", json=experiment(), headers=MARKETING)
    page = client.get("/experiments/ranker-vs-rules", headers=MARKETING)
    assert page.status_code == 200
    assert "No decisions yet: nothing to show over time." in page.text
    # The rate charts are drawn, each variant labelled with no number to show.
    assert page.text.count('<g class="mark"') == 6
    assert page.text.count(">no decisions</text>") == 6
    assert "data-value" not in page.text and 'id="cumulative-chart"' not in page.text
