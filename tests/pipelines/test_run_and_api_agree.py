"""The invoice run and the API decide every invoice of a billing date alike, on small simulated
worlds of several seeds and sizes: the same offers in the same order, the same reasons, the same
usage summary, the same experiment variant, byte for byte.

Each world is simulated, its features built, and then decided twice, each side with a decision
log of its own (a shared one would only replay): by ``offers invoice-run`` over the feature
tables, and through ``POST /v1/offers/batch`` over a Feast online store materialised up to the
same moment: the start of the billing date (a run made that day), or now, when the store holds
usage months after the invoice's billing period and the time rule moves them back. One
experiment runs in both logs. The API's log holds the world's earlier offers and declines (the
decisions of ``offer_events`` shown before the date, as the API would have logged them), which
the run reads from ``offer_events`` itself.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.catalog import load_catalog
from core.contract import CONSENTS, INVOICES, OFFER_EVENTS
from core.settings import Settings
from core.tables import read_table
from features.store import PROJECT
from pipelines.frame_source import start_of_day
from pipelines.invoice_run import ChampionModels, recent_declines_by_invoice, run_invoice_run
from serving.decision_log import DecisionLog, DecisionRecord, EventRecord, LoggedOffer
from serving.decision_log.records import ExperimentSpec, Variant
from serving.experiments import Experiments
from tests.factories.api import (
    CATALOG,
    CUSTOMER_VIEWS,
    api_settings,
    auth,
    churn,
    feast_app,
    ranker,
    running,
)

pytestmark = [pytest.mark.integration]

END_MONTH = dt.date(2026, 11, 1)
# The simulator bills on the 1st, 10th and 20th of a month.
# Each world is decided as its billing day starts (the store and the run as of 00:00 that day) or
# later (both with everything known now, the usage moved back to the billing period).
ON_THE_DAY, LATER = "on the billing day", "later"
WORLDS = [
    pytest.param(3, 250, dt.date(2026, 11, 20), LATER, id="seed 3, 250 customers, 20 Nov, later"),
    pytest.param(
        8, 400, dt.date(2026, 11, 10), ON_THE_DAY, id="seed 8, 400 customers, 10 Nov, on the day"
    ),
    pytest.param(5, 300, dt.date(2026, 11, 1), LATER, id="seed 5, 300 customers, 1 Nov, later"),
]
EXPERIMENT = ExperimentSpec(
    key="ranker-vs-rules",
    description="",
    variants=(
        Variant("treatment", 0.6, "model"),
        Variant("rules", 0.25, "rules"),
        Variant("control", 0.15, "holdout"),
    ),
    start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    end=dt.datetime(2027, 1, 31, tzinfo=dt.UTC),
)
# The API's own test registry serves these two: the run decides with the same.
MODELS = ChampionModels(ranker=ranker("1"), churn=churn("1"))


def world(root: Path, seed: int, customers: int) -> Settings:
    """A simulated world's tables and feature tables under ``root``; the API's settings."""
    from features.pipeline import build_features
    from pipelines.simulation.world import simulate

    settings = api_settings(
        root,
        data_dir=root / "raw",
        features_dir=root / "features",
        feast_dir=root / "feast",
        database_url=f"sqlite:///{root / 'api.db'}",
        # The world's dates stay inside the window whatever the day the test runs.
        invoice_date_past_days=36_500,
        feature_timeout_ms=10_000.0,
    )
    simulate(
        customers=customers,
        months=8,
        seed=seed,
        out=settings.data_dir,
        catalog=load_catalog(CATALOG),
        end_month=END_MONTH,
    )
    build_features(settings=settings)
    return settings


def materialised_up_to(settings: Settings, moment: dt.datetime) -> None:
    """The online store as a materialize at ``moment`` leaves it."""
    from features.store import apply_repository, materialize

    apply_repository(settings)
    # Materialisation covers [start, end); one microsecond more includes the rows dated exactly
    # then (the invoice's own billing facts), as the run's `<=` does.
    materialize(
        moment + dt.timedelta(microseconds=1),
        settings,
        views=[*CUSTOMER_VIEWS, "offer_attributes"],
        show_progress=False,
    )


def log_history(log: DecisionLog, events: pd.DataFrame, day: dt.date) -> int:
    """The decisions of ``offer_events`` shown before ``day``, and the declines known by then,
    as the API logged them; returns how many declines."""
    moment = pd.Timestamp(start_of_day(day))
    events = events[pd.to_datetime(events["shown_at"], utc=True) < moment]
    declines = 0
    for decision_id, shown in events.groupby("decision_id", sort=False):
        first = shown.iloc[0]
        shown_at = pd.Timestamp(first["shown_at"]).tz_convert("UTC").to_pydatetime()
        log.record(
            DecisionRecord(
                decision_id=str(decision_id),
                invoice_id=str(first["invoice_id"]),
                customer_id=str(first["customer_id"]),
                invoice_date=shown_at.date(),
                created_at=shown_at,
                policy=str(first["policy"]),
                model_version=None,
                experiment_key=None,
                experiment_variant=None,
                degraded=None,
                consent={"marketing": True},
                response_json="{}",
                log={},
                offers=tuple(
                    LoggedOffer(str(row.offer_id), int(row.rank), None, None)
                    for row in shown.itertuples()
                ),
            )
        )
        for row in shown.itertuples():
            if row.outcome != "declined":
                continue
            at = pd.Timestamp(shown_at if pd.isna(row.outcome_at) else row.outcome_at)
            at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
            if at > moment:
                continue
            when = at.to_pydatetime()
            event_id = f"E-{decision_id}-{row.offer_id}"
            offer = str(row.offer_id)
            log.record_event(EventRecord(event_id, str(decision_id), offer, "decline", when, when))
            declines += 1
    return declines


def log_with_history(url: str, events: pd.DataFrame, day: dt.date) -> int:
    """A decision log at ``url`` holding the world's history before ``day`` (:func:`log_history`)
    and the running experiment; returns how many declines."""
    log = DecisionLog(url)
    try:
        declines = log_history(log, events, day)
    finally:
        log.close()
    with_experiment(url)
    return declines


def with_experiment(url: str) -> None:
    log = DecisionLog(url)
    try:
        Experiments(log).create(EXPERIMENT)
    finally:
        log.close()


def api_answers(settings: Settings, invoices: pd.DataFrame, day: dt.date) -> dict[str, str]:
    """Each invoice's answer through POST /v1/offers/batch, by invoice id."""
    answers: dict[str, str] = {}
    items = [
        {"invoice_id": invoice, "customer_id": customer, "invoice_date": day.isoformat()}
        for invoice, customer in zip(invoices["invoice_id"], invoices["customer_id"], strict=True)
    ]
    with running(feast_app(settings, PROJECT)) as client:
        for start in range(0, len(items), 500):
            response = client.post(
                "/v1/offers/batch",
                json={"invoices": items[start : start + 500]},
                headers=auth("renderer"),
            )
            assert response.status_code == 200, response.text
            for item, result in zip(items[start:], response.json()["results"], strict=False):
                assert result["status"] == 200, result
                answers[item["invoice_id"]] = json.dumps(result["decision"])
    return answers


def single_answers(settings: Settings, invoices: pd.DataFrame, day: dt.date) -> dict[str, str]:
    """Each invoice's answer through POST /v1/offers, sent one after another in the given order."""
    answers: dict[str, str] = {}
    with running(feast_app(settings, PROJECT)) as client:
        for invoice, customer in zip(invoices["invoice_id"], invoices["customer_id"], strict=True):
            body = {"invoice_id": invoice, "customer_id": customer, "invoice_date": day.isoformat()}
            response = client.post("/v1/offers", json=body, headers=auth("renderer"))
            assert response.status_code == 200, response.text
            answers[invoice] = response.text
    return answers


def without_id(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in answer.items() if name != "decision_id"}


@pytest.mark.parametrize(("seed", "customers", "day", "when"), WORLDS)
def test_the_run_and_the_api_give_every_invoice_the_same_decision(
    tmp_path: Path, seed: int, customers: int, day: dt.date, when: str
) -> None:
    moment = start_of_day(day) if when == ON_THE_DAY else dt.datetime.now(dt.UTC)
    settings = world(tmp_path, seed, customers)
    invoices = read_table(settings.data_dir, INVOICES)
    billed = invoices[invoices["invoice_date"] == pd.Timestamp(day)]
    assert len(billed) > 20

    events = read_table(settings.data_dir, OFFER_EVENTS)
    declines = log_with_history(settings.database_url, events, day)
    materialised_up_to(settings, moment)
    api = api_answers(settings, billed, day)

    run_settings = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'run.db'}"})
    with_experiment(run_settings.database_url)
    out = tmp_path / "decisions.parquet"
    summary = run_invoice_run(day, out, settings=run_settings, models=MODELS, features_as_of=moment)
    rows = pd.read_parquet(out)

    assert summary.decided == len(billed) == len(rows) == len(api)
    assert summary.experiment == EXPERIMENT.key
    policies = set()
    shown = 0
    for row in rows.to_dict("records"):
        ours = json.loads(row["decision"])
        theirs = without_id(json.loads(api[row["invoice_id"]]))
        policies.add(ours["policy"])
        shown += len(ours["offers"])
        # Offers, order and reasons first, for a readable failure; then the whole answer.
        assert [(o["offer_id"], o["reasons"]) for o in ours["offers"]] == [
            (o["offer_id"], o["reasons"]) for o in theirs["offers"]
        ], row["invoice_id"]
        assert ours["usage_summary"] == theirs["usage_summary"], row["invoice_id"]
        assert ours == theirs, row["invoice_id"]
    # The worlds exercise what the rule is about: several policies, offers shown, and declines
    # that the cap had to honour.
    assert {"model", "holdout"} <= policies
    assert shown > 0
    assert declines > 0


# A customer's second invoice of the day --------------------------------------------------------


def with_second_invoices(settings: Settings, day: dt.date) -> pd.DataFrame:
    """Give every customer billed on ``day`` a second invoice that day (id ``<first>-B``) in the
    world's invoices table; returns the day's invoices in the order they are decided."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(settings.data_dir) / "invoices.parquet"
    table = pq.read_table(path)
    dates = pc.cast(table["invoice_date"], pa.date32())
    second = table.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
    ids = pc.binary_join_element_wise(second["invoice_id"], pa.scalar("-B"), "")
    field = table.schema.field("invoice_id")
    second = second.set_column(second.schema.get_field_index("invoice_id"), field, ids)
    pq.write_table(pa.concat_tables([table, second]), path)
    invoices = read_table(settings.data_dir, INVOICES)
    billed = invoices[invoices["invoice_date"] == pd.Timestamp(day)]
    return billed.sort_values(["customer_id", "invoice_id"]).reset_index(drop=True)


def test_a_customers_second_invoice_of_the_day_is_decided_as_the_api_decides_it(
    tmp_path: Path,
) -> None:
    """The API decides a customer's second invoice with the first in its log: a decline cap of
    one invoice then reaches no earlier invoice. The batch endpoint and the run, logged or not,
    decide it alike."""
    day = dt.date(2026, 11, 20)
    moment = dt.datetime.now(dt.UTC)
    settings = world(tmp_path, 3, 250).model_copy(update={"decline_cap_invoices": 1})
    billed = with_second_invoices(settings, day)
    seconds = billed[billed["invoice_id"].str.endswith("-B")]
    assert len(seconds) > 20 and len(billed) == 2 * len(seconds)
    events = read_table(settings.data_dir, OFFER_EVENTS)
    # The world exercises the rule: some customers declined an offer on their last invoice,
    # which blocks it on the first invoice of the day and no longer on the second.
    firsts_blocked = recent_declines_by_invoice(events, start_of_day(day), 1, billed)
    assert any(not invoice.endswith("-B") for invoice in firsts_blocked)
    assert not any(invoice.endswith("-B") for invoice in firsts_blocked)

    log_with_history(settings.database_url, events, day)
    materialised_up_to(settings, moment)
    api = single_answers(settings, billed, day)
    # The batch endpoint, on a log of its own with the same history, answers alike.
    batch_settings = settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'batch.db'}"}
    )
    log_with_history(batch_settings.database_url, events, day)
    batch = api_answers(batch_settings, billed, day)
    assert {i: without_id(json.loads(a)) for i, a in batch.items()} == {
        i: without_id(json.loads(a)) for i, a in api.items()
    }

    run_settings = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'run.db'}"})
    with_experiment(run_settings.database_url)
    logged_out, what_if_out = tmp_path / "logged.parquet", tmp_path / "what-if.parquet"
    run_invoice_run(day, logged_out, settings=run_settings, models=MODELS, features_as_of=moment)
    run_invoice_run(
        day,
        what_if_out,
        settings=run_settings,
        models=MODELS,
        features_as_of=moment,
        log_decisions=False,
    )
    logged = {row["invoice_id"]: row for row in pd.read_parquet(logged_out).to_dict("records")}
    what_if = {row["invoice_id"]: row for row in pd.read_parquet(what_if_out).to_dict("records")}
    assert set(logged) == set(what_if) == set(api) == set(billed["invoice_id"])
    unblocked = 0
    for invoice_id, row in logged.items():
        ours = json.loads(row["decision"])
        assert ours == without_id(json.loads(api[invoice_id])), invoice_id
        if ours["policy"] == "model":  # the champion, as the run without the log decides
            offers = [o["offer_id"] for o in ours["offers"]]
            assert [o["offer_id"] for o in json.loads(what_if[invoice_id]["offers"])] == offers
        first = invoice_id.removesuffix("-B")
        if invoice_id.endswith("-B") and first in firsts_blocked:
            shown = {o["offer_id"] for o in ours["offers"]}
            unblocked += bool(shown & firsts_blocked[first])
    # Some second invoices show an offer the first invoice's cap kept off.
    assert unblocked > 0


# A consent change recorded on the invoice's day -------------------------------------------------


CONSENT_DAY = dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def consent_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame]:
    """A small world, its store materialised now, and the invoices of ``CONSENT_DAY``."""
    root = tmp_path_factory.mktemp("consent-day")
    settings = world(root, 3, 200)
    materialised_up_to(settings, dt.datetime.now(dt.UTC))
    invoices = read_table(settings.data_dir, INVOICES)
    billed = invoices[invoices["invoice_date"] == pd.Timestamp(CONSENT_DAY)]
    assert len(billed) > 10
    return settings, billed


def _decision(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what names the request (the ids differ between the three paths)."""
    return {
        name: value for name, value in answer.items() if name not in ("decision_id", "invoice_id")
    }


# The batch, the single request and the run decide one invoice under three invoice ids here, and
# whether a decision explores is drawn from its invoice id: exploration would differ by id alone.
NO_EXPLORATION = {"exploration_share": 0.0}


@pytest.mark.slow
def test_batch_single_and_run_honour_a_same_day_consent_change_alike(
    tmp_path: Path, consent_world: tuple[Settings, pd.DataFrame]
) -> None:
    """A consent answer received through POST /v1/consents, stamped on the invoice's day, is
    honoured the same way by POST /v1/offers/batch, POST /v1/offers and `offers invoice-run`
    (which reads the answers the decision log received, as a materialize followed by `offers
    consents sync` leaves the online store): for the customer it names and for the rest of the
    day's invoices, byte for byte but for the ids.

    Each example has decision logs of its own (one would replay the last example's answers);
    the API's holds the world's history.
    Not generated: a grant older than the customer's online row (the API defers it to the next
    sync) and an answer the consents table overtakes (the next materialize drops it); in both
    the online store lags until the sync, by design."""
    from hypothesis import HealthCheck, assume, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    from features.consent_rows import ConsentRowWrite

    world_settings_, billed = consent_world
    table = read_table(world_settings_.data_dir, CONSENTS)
    table_updated = pd.to_datetime(table["updated_at"], utc=True)
    events = read_table(world_settings_.data_dir, OFFER_EVENTS)
    customers = sorted(billed["customer_id"].unique())
    examples = iter(range(1, 1000))
    honoured: list[tuple[str, bool, str]] = []

    @hypothesis_settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        customer=st.sampled_from(customers),
        purpose=st.sampled_from(["marketing", "profiling"]),
        granted=st.booleans(),
        minute=st.integers(0, 24 * 60 - 1),
    )
    def agree(customer: str, purpose: str, granted: bool, minute: int) -> None:
        updated_at = start_of_day(CONSENT_DAY) + dt.timedelta(minutes=minute)
        overtaken = (
            (table["customer_id"] == customer)
            & (table["purpose"] == purpose)
            & (table_updated > updated_at)
        )
        assume(not overtaken.any())
        number = next(examples)
        api_url = f"sqlite:///{tmp_path / f'api-{number}.db'}"
        run_url = f"sqlite:///{tmp_path / f'run-{number}.db'}"
        # The world's earlier offers and declines, as the API logged them (the run reads them
        # from offer_events).
        api_log = DecisionLog(api_url)
        try:
            log_history(api_log, events, CONSENT_DAY)
        finally:
            api_log.close()
        with running(
            feast_app(
                world_settings_.model_copy(update={**NO_EXPLORATION, "database_url": api_url}),
                PROJECT,
            )
        ) as client:
            services = client.app.state.services
            source = services.feature_store.current()
            assert source is not None
            original = source.read_consent_row(customer)  # as the materialize left it
            assert original is not None
            try:
                stored = client.post(
                    "/v1/consents",
                    json={
                        "change_id": f"CC-DAY-{number}",
                        "customer_id": customer,
                        "purpose": purpose,
                        "granted": granted,
                        "updated_at": updated_at.isoformat(),
                    },
                    headers=auth("consent"),
                )
                assert stored.status_code == 202, stored.text
                assume(stored.json()["online"] == "applied")
                items = [
                    {"invoice_id": f"{i}-B", "customer_id": c, "invoice_date": "2026-11-20"}
                    for i, c in zip(billed["invoice_id"], billed["customer_id"], strict=True)
                ]
                batch = client.post(
                    "/v1/offers/batch", json={"invoices": items}, headers=auth("renderer")
                )
                assert batch.status_code == 200, batch.text
                by_batch = {
                    item["invoice_id"].removesuffix("-B"): _decision(result["decision"])
                    for item, result in zip(items, batch.json()["results"], strict=True)
                }
                mine = billed[billed["customer_id"] == customer]["invoice_id"].iloc[0]
                single = client.post(
                    "/v1/offers",
                    json={
                        "invoice_id": f"{mine}-S",
                        "customer_id": customer,
                        "invoice_date": "2026-11-20",
                    },
                    headers=auth("renderer"),
                )
                assert single.status_code == 200, single.text
                # The run's own log holds the answers the API's received (in one shared log
                # the run would replay the API's decisions).
                with services.log.engine.connect() as connection:
                    received = (
                        connection.execute(services.log.tables.consent_changes.select())
                        .mappings()
                        .all()
                    )
            finally:
                source.write_consent_row(
                    ConsentRowWrite(customer, dict(original.values), original.event_time)
                )
        run_log = DecisionLog(run_url)
        try:
            with run_log.engine.begin() as connection:
                connection.execute(
                    run_log.tables.consent_changes.insert(), [dict(row) for row in received]
                )
        finally:
            run_log.close()
        out = tmp_path / f"run-{number}.parquet"
        run_invoice_run(
            CONSENT_DAY,
            out,
            settings=world_settings_.model_copy(update={**NO_EXPLORATION, "database_url": run_url}),
            models=MODELS,
            features_as_of=dt.datetime.now(dt.UTC),
        )
        by_run = {
            row["invoice_id"]: _decision(json.loads(row["decision"]))
            for row in pd.read_parquet(out).to_dict("records")
        }

        answer = _decision(single.json())
        assert answer["consent"][purpose] is granted
        assert by_batch[mine] == answer, (customer, purpose, granted)
        assert by_run[mine] == answer, (customer, purpose, granted)
        differing = {
            invoice: {
                name: (by_run[invoice].get(name), decision.get(name))
                for name in decision
                if by_run[invoice].get(name) != decision.get(name)
            }
            for invoice, decision in by_batch.items()
            if by_run.get(invoice) != decision
        }
        assert not differing, differing
        honoured.append((purpose, granted, answer["policy"]))

    agree()
    # The examples changed decisions: a withdrawal of marketing answered with no offers.
    assert honoured, "no example was decided"
