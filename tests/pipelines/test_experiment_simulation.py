"""``offers experiments simulate``: the engine decides under the variants, the simulated world's
hidden behaviour answers as events, the report follows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.decision_log import DecisionLog
from serving.decision_log.records import ExperimentSpec, Variant
from serving.experiments import Experiments
from tests.simulated_world import SimulatedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_cycle_decides_answers_and_reports(
    simulated_world: SimulatedWorld, tmp_path: Path
) -> None:
    from pipelines.experiment_simulation import simulate_experiment

    settings = simulated_world.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'offers.db'}"}
    )
    log = DecisionLog(settings.database_url)
    Experiments(log).create(
        ExperimentSpec(
            key="ranker-vs-holdout",
            description="",
            variants=(Variant("treatment", 0.8, "model"), Variant("holdout", 0.2, "holdout")),
            start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            end=dt.datetime(2026, 12, 31, tzinfo=dt.UTC),
        )
    )
    log.close()

    run = simulate_experiment("ranker-vs-holdout", 1, settings, seed=3)
    assert run.months == ("2026-11",)
    assert run.decisions > 500
    # Customers without marketing consent are decided but not enrolled.
    assert 0 < run.enrolled < run.decisions
    report = run.report
    treatment, holdout = report.variants
    assert report.customers == treatment.customers + holdout.customers > 0
    assert treatment.impressions == treatment.offers_shown > 0
    assert treatment.accepted > 0 and treatment.clicks >= treatment.accepted
    assert (holdout.offers_shown, holdout.accepted) == (0, 0)
    # Against the champion's own variant (the control), the holdout loses what is accepted.
    difference = holdout.differences["acceptance_rate"]
    assert difference.value == pytest.approx(-(treatment.acceptance_rate or 0.0))
    assert report.srm is not None and not report.srm.failed
    assert run.events >= treatment.offers_shown
    # Customers without profiling consent got the segment's fixed list, and some accepted from it:
    # each accept is priced by its fee change, so none counts 0 and nothing warns.
    log = DecisionLog(settings.database_url)
    decisions, events = log.tables.decisions, log.tables.events
    with log.engine.connect() as connection:
        segment_list_accepts = connection.execute(
            sa.select(sa.func.count())
            .select_from(events.join(decisions, decisions.c.decision_id == events.c.decision_id))
            .where(events.c.type == "accept", decisions.c.policy == "non_personalised")
        ).scalar_one()
    log.close()
    assert segment_list_accepts > 0
    assert not [warning for warning in report.warnings if "revenue change" in warning]
    assert treatment.revenue_change_sek_per_customer is not None

    again = simulate_experiment("ranker-vs-holdout", 1, settings, seed=3)
    assert (again.decisions, again.events) == (0, 0)  # invoices already decided stay as they are
    assert again.report.customers == report.customers
