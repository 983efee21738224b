"""The batch invoice run on the simulated world: the API's decisions, written once per invoice.

The session's simulated world (tests/simulated_world.py) and its feature tables are read. The run is
compared with the API's own decision path over a Feast online store materialised up to the same
moment, and the Spark engine with the local one.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.catalog import Catalog, load_catalog
from core.contract import CONTRACTS, INVOICES, OFFER_EVENTS
from core.settings import Settings
from core.tables import read_table
from core.validation import ContractError
from pipelines.frame_source import DECISION_VIEWS, start_of_day
from pipelines.invoice_run import (
    ChampionModels,
    InvoiceRunError,
    InvoiceRunSummary,
    decision_row,
    feature_paths,
    load_champions,
    recent_declines,
    recent_declines_by_invoice,
    run_invoice_run,
)
from pipelines.invoice_run.spark import executor_settings, task_error_name
from serving.decision.arbitration import Objective
from serving.decision.engine import decide
from serving.decision.inputs import DecisionRequest
from serving.decision_log import DecisionLog, DecisionRecord
from serving.decision_log.circuit import DecisionLogUnavailable
from serving.decision_log.ids import billing_run_decision_ids
from serving.decision_log.records import ExperimentSpec, Variant
from serving.experiments import Experiments, assign_variant
from serving.offers_response import OffersResponse, offers_answer_json
from tests.factories.api import auth, churn, just_now, make_app, ranker, running
from tests.factories.spark import require_spark
from tests.simulated_world import SimulatedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The world bills on the 1st, 10th and 20th; the 20 November run has a full feature history.
REPOSITORY = Path(__file__).resolve().parents[2]
INVOICE_DATE = dt.date(2026, 11, 20)
CUSTOMER_VIEWS = list(DECISION_VIEWS)


@pytest.fixture(scope="module")
def world(simulated_world: SimulatedWorld, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shared simulated world and its feature tables, with a Feast store of this module's own
    (materialised only up to the run's moment)."""
    own = tmp_path_factory.mktemp("invoice-run")
    return simulated_world.settings.model_copy(
        update={
            "feast_dir": own / "feast",
            "database_url": f"sqlite:///{own / 'offers.db'}",
            "feature_timeout_ms": 10_000.0,
            "spark_master": "local[2]",
        }
    )


@pytest.fixture(scope="module")
def catalog(world: Settings) -> Catalog:
    return load_catalog(world.catalog)


@pytest.fixture(scope="module")
def models() -> ChampionModels:
    """Small boosters over the served inputs: the API's scorer, explanations included."""
    return ChampionModels(ranker=ranker("4"), churn=churn("2"))


@pytest.fixture(scope="module")
def local_run(
    world: Settings, models: ChampionModels, tmp_path_factory: pytest.TempPathFactory
) -> tuple[InvoiceRunSummary, pd.DataFrame]:
    out = tmp_path_factory.mktemp("local") / "decisions.parquet"
    summary = run_invoice_run(INVOICE_DATE, out, "local", settings=world, models=models)
    return summary, pd.read_parquet(out)


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(name): value for name, value in row.items()} for row in rows.to_dict("records")]


def _invoices_of_day(world: Settings) -> pd.DataFrame:
    invoices = read_table(world.data_dir, INVOICES)
    return invoices[invoices["invoice_date"] == pd.Timestamp(INVOICE_DATE)]


def _declines(world: Settings) -> dict[str, frozenset[str]]:
    """Per invoice id of the day, what the decline cap blocks, as the run reads it."""
    events = read_table(world.data_dir, OFFER_EVENTS)
    invoices = _invoices_of_day(world).sort_values(["customer_id", "invoice_id"])
    return recent_declines_by_invoice(
        events, start_of_day(INVOICE_DATE), world.decline_cap_invoices, invoices
    )


# --- the local run --------------------------------------------------------------------------------


def test_one_row_per_invoice_billed_that_day(
    world: Settings, local_run: tuple[InvoiceRunSummary, pd.DataFrame]
) -> None:
    summary, rows = local_run
    billed = _invoices_of_day(world)
    assert len(billed) > 300
    assert sorted(rows["invoice_id"]) == sorted(billed["invoice_id"])
    assert rows["invoice_id"].is_unique
    keys = list(zip(rows["customer_id"], rows["invoice_id"], strict=True))
    assert keys == sorted(keys)
    by_invoice = billed.set_index("invoice_id")["customer_id"]
    assert (rows["customer_id"].to_numpy() == by_invoice[rows["invoice_id"]].to_numpy()).all()
    assert set(rows["invoice_date"]) == {INVOICE_DATE}
    assert (summary.invoices, summary.decided, summary.unknown_customers) == (len(billed),) * 2 + (
        0,
    )
    assert summary.policies == rows["policy"].value_counts().to_dict()
    assert summary.model_version == "offer-ranker/4"
    assert summary.warnings == ()
    assert (summary.logged, summary.replayed, summary.conflicts) == (len(rows), 0, 0)
    assert f"decision log: {len(rows):,} decisions written, 0 replayed" in str(summary)
    assert f"{len(rows):,} of {len(billed):,} invoices decided" in str(summary)


def test_decision_ids_follow_the_runs_order(
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
) -> None:
    _, rows = local_run
    # The output is in the run's order (customer, then invoice id): its ids are the day's.
    assert rows["decision_id"].tolist() == billing_run_decision_ids(
        INVOICE_DATE, rows["invoice_id"]
    )
    assert rows["decision_id"].is_unique
    assert rows["decision_id"].is_monotonic_increasing


def test_offers_keep_to_the_contract(
    catalog: Catalog, local_run: tuple[InvoiceRunSummary, pd.DataFrame]
) -> None:
    _, rows = local_run
    offers_by_id = catalog.by_id()
    policies = set(rows["policy"])
    assert {"model", "none"} <= policies
    for row in _records(rows):
        decision = json.loads(row["decision"])
        offers = json.loads(row["offers"])
        assert decision["offers"] == offers
        assert decision["policy"] == row["policy"]
        assert decision["invoice_id"] == row["invoice_id"]
        assert "decision_id" not in decision
        assert decision["experiment"] is None
        assert json.loads(row["usage_summary"]) == decision["usage_summary"]
        assert len(offers) <= 3
        assert [offer["rank"] for offer in offers] == list(range(1, len(offers) + 1))
        assert len({offer["offer_id"] for offer in offers}) == len(offers)
        for offer in offers:
            entry = offers_by_id[offer["offer_id"]]
            assert entry.is_valid_on(INVOICE_DATE)
            assert offer["kind"] == entry.kind
            assert offer["title"] == entry.title.sv
            assert offer["reasons"], offer
            # Loyalty fairness: never above what a new customer pays for it today.
            if entry.kind == "plan":
                assert offer["monthly_fee_sek"] <= entry.price_for_new_customers + 1e-9
        if row["policy"] in ("none", "holdout"):
            assert offers == []
        if not decision["consent"]["profiling"]:
            assert all(not offer["contributions"] for offer in offers)
        if row["policy"] == "model" and offers:
            assert row["model_version"] == "offer-ranker/4"
            assert all(offer["acceptance_probability"] is not None for offer in offers)
        if row["policy"] != "model":
            assert row["model_version"] is None


def test_former_customers_final_invoices_offer_nothing_but_help_with_a_debt(
    world: Settings, local_run: tuple[InvoiceRunSummary, pd.DataFrame]
) -> None:
    _, rows = local_run
    contracts = read_table(world.data_dir, CONTRACTS).sort_values(["customer_id", "valid_from"])
    last = contracts.groupby("customer_id").tail(1)
    left = set(last.loc[last["valid_to"] < pd.Timestamp(INVOICE_DATE), "customer_id"])
    final = rows[rows["customer_id"].isin(left)]
    assert len(final) >= 3, "the simulated world bills customers who left last month"
    # Not for want of consent: some of them may be marketed to, as the others of the day who
    # get offers.
    assert (final["policy"] != "none").sum() >= 2
    others = rows.loc[~rows["customer_id"].isin(left), "offers"]
    assert sum(bool(json.loads(offers)) for offers in others) > len(others) / 4
    for row in _records(final):
        offers = [offer["offer_id"] for offer in json.loads(row["offers"])]
        assert offers in ([], ["PAY_INSTALMENT"]), (row["policy"], offers)
        summary = json.loads(row["usage_summary"])
        assert summary.get("plan_fit") is None


def test_recently_declined_offers_are_not_shown_again(
    world: Settings, local_run: tuple[InvoiceRunSummary, pd.DataFrame]
) -> None:
    _, rows = local_run
    declines = _declines(world)
    checked = 0
    for row in _records(rows):
        declined = declines.get(row["invoice_id"], frozenset())
        if declined:
            checked += 1
            assert not declined & {offer["offer_id"] for offer in json.loads(row["offers"])}
    assert checked > 0


# --- the same decisions as the API ----------------------------------------------------------------


@pytest.fixture(scope="module")
def online_source(world: Settings) -> Iterator[Any]:
    """The API's Feast source over a SQLite online store materialised up to now, what the run
    reads too."""
    from features.store import apply_repository, materialize
    from serving.feature_reader import open_feast_source

    apply_repository(world)
    # Now, as the API's store is kept and as the run reads the feature tables.
    materialize(dt.datetime.now(dt.UTC), world, views=CUSTOMER_VIEWS, show_progress=False)
    source = open_feast_source(world)
    yield source
    source.close()


def _handful(rows: pd.DataFrame, declines: dict[str, frozenset[str]]) -> pd.DataFrame:
    """A few invoices of every policy, and some whose customer declined an offer lately."""
    picked = [group.head(4) for _, group in rows.groupby("policy")]
    picked.append(rows[rows["invoice_id"].isin(declines)].head(4))
    return pd.concat(picked).drop_duplicates("invoice_id")


def test_the_api_decision_path_gives_the_same_decisions(
    world: Settings,
    catalog: Catalog,
    models: ChampionModels,
    online_source: Any,
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
) -> None:
    _, rows = local_run
    declines = _declines(world)
    scorer = models.scorer()
    sample = _handful(rows, declines)
    assert len(sample) >= 8
    assert sample["offers"].map(lambda text: len(json.loads(text))).sum() > 0
    for row in _records(sample):
        request = DecisionRequest(
            invoice_id=row["invoice_id"],
            customer_id=row["customer_id"],
            invoice_date=INVOICE_DATE,
            locale="sv",
            max_offers=3,
        )
        api = decide(
            request,
            online_source,
            catalog,
            policy="model",
            scorer=scorer,
            recently_declined=declines.get(row["invoice_id"], frozenset()),
            objective=Objective.from_settings(world),  # as the API's service is given it
        )
        batch_offers = json.loads(row["offers"])
        api_offers = [offer.to_public_dict() for offer in api.offers]
        assert [(o["offer_id"], o["rank"], o["reasons"]) for o in api_offers] == [
            (o["offer_id"], o["rank"], o["reasons"]) for o in batch_offers
        ], row["invoice_id"]
        # And the whole answer, usage summary included, byte for byte.
        assert decision_row(api, row["decision_id"])["decision"] == row["decision"], row[
            "invoice_id"
        ]
        # Written straight from the engine's values, as the response schema writes them.
        schema = OffersResponse.for_decision(api, row["decision_id"])
        assert offers_answer_json(api, row["decision_id"]) == schema.model_dump_json()
        assert (
            offers_answer_json(api, row["decision_id"], dry_run=True)
            == schema.model_copy(update={"dry_run": True}).model_dump_json()
        )


def test_each_answer_is_what_the_response_schema_writes_for_it(
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
) -> None:
    """The answers are written straight from the engine's values; validated into the response
    schema and written by it, each of the day's answers comes out byte for byte the same (a
    whole number in a field of money or probability would come back as 149.0, a date in
    another form, a field out of the schema's order)."""
    _, rows = local_run
    assert len(rows) > 500
    assert set(rows["policy"]) >= {"model", "non_personalised"}
    for row in _records(rows):
        answer = f'{{"decision_id":"{row["decision_id"]}",' + row["decision"][1:]
        schema = OffersResponse.model_validate_json(answer)
        assert schema.model_dump_json() == answer, row["invoice_id"]
        dry_run = schema.model_copy(update={"dry_run": True}).model_dump_json()
        assert dry_run == answer[:-1] + ',"dry_run":true}', row["invoice_id"]


# --- engines, inputs, output ----------------------------------------------------------------------


@pytest.mark.spark
def test_the_spark_engine_writes_the_same_rows(
    world: Settings,
    models: ChampionModels,
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
    tmp_path: Path,
) -> None:
    require_spark()
    out = tmp_path / "spark.parquet"
    summary = run_invoice_run(
        INVOICE_DATE, out, "spark", settings=world, models=models, log_decisions=False
    )
    _, local = local_run
    spark = pd.read_parquet(out)
    assert summary.logged is None and "not written (--no-log)" in str(summary)
    assert summary.engine == "spark" and summary.decided == len(local)
    pd.testing.assert_frame_equal(spark, local)


def test_the_models_sent_to_spark_executors_keep_the_segments_acceptance() -> None:
    """Non-personalised offers are ordered by the segment's acceptance in the ranker's metadata:
    an executor's copy of the ranker must order them as the driver's does."""
    from dataclasses import replace

    from pipelines.invoice_run.spark import ModelText

    rates = {"consumer": {"PAY_EINVOICE": 0.3, "PAY_AUTOGIRO": 0.1}}
    served = replace(ranker("4"), metadata={"segment_offer_acceptance": rates})
    copied = ModelText.from_loaded(served).load()
    assert copied.metadata == served.metadata
    scorer = ChampionModels(ranker=copied, churn=churn("2")).scorer()
    assert scorer is not None
    assert scorer.segment_acceptance("consumer") == {"PAY_EINVOICE": 0.3, "PAY_AUTOGIRO": 0.1}


def test_without_a_champion_rules_decide(
    world: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_champion(name: str, settings: Settings) -> None:
        raise LookupError(f"{name} has no champion version")

    monkeypatch.setattr("pipelines.invoice_run.run.load_champion", no_champion)
    out = tmp_path / "rules.parquet"
    own_log = world.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'offers.db'}"})
    summary = run_invoice_run(INVOICE_DATE, out, settings=own_log, max_offers=1, locale="en")
    rows = pd.read_parquet(out)
    assert summary.model_version is None
    assert "model" not in set(rows["policy"])
    assert "rules" in set(rows["policy"])
    assert rows["model_version"].isna().all()
    offers = rows["offers"].map(json.loads)
    assert offers.map(len).max() == 1
    assert "none (rules decide)" in str(summary)


def test_a_day_without_invoices_writes_an_empty_file(world: Settings, tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    summary = run_invoice_run(dt.date(2026, 11, 21), out, settings=world, models=ChampionModels())
    assert summary.invoices == summary.decided == 0
    assert pq.read_table(out).num_rows == 0


def test_invalid_input_tables_write_nothing(world: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "raw"
    shutil.copytree(world.data_dir, broken)
    invoices = pq.read_table(broken / "invoices.parquet").drop_columns(["due_date"])
    pq.write_table(invoices, broken / "invoices.parquet")
    out = tmp_path / "decisions.parquet"
    with pytest.raises(ContractError, match=r"invoices\.parquet.*due_date"):
        run_invoice_run(INVOICE_DATE, out, settings=world, data_dir=broken, models=ChampionModels())
    assert not out.exists()
    assert list(tmp_path.glob(".decisions.parquet*")) == []


def _append(path: Path, row: dict[str, Any]) -> None:
    table = pq.read_table(path)
    pq.write_table(
        pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)]), path
    )


def test_an_invoice_of_a_customer_the_features_never_saw_is_skipped(
    world: Settings, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(world.data_dir, raw)
    _append(
        raw / "customers.parquet",
        {
            "customer_id": "C-NEW",
            "birth_year": 1990,
            "signup_date": INVOICE_DATE,
            "region": "Uppsala",
            "segment": "consumer",
            "satisfaction": None,
        },
    )
    _append(
        raw / "invoices.parquet",
        {
            "invoice_id": "INV-NEW-1",
            "customer_id": "C-NEW",
            "invoice_date": INVOICE_DATE,
            "due_date": INVOICE_DATE + dt.timedelta(days=30),
            "amount_sek": 99.0,
            "invoice_fee_sek": 0.0,
            "reminder_fee_sek": 0.0,
            "paid_date": None,
            "reminders": 0,
            "sent_to_collection": False,
        },
    )
    out = tmp_path / "decisions.parquet"
    # The features were built before this customer existed, as the online store would be.
    summary = run_invoice_run(
        INVOICE_DATE, out, settings=world, data_dir=raw, models=ChampionModels()
    )
    rows = pd.read_parquet(out)
    assert summary.invoices == len(_invoices_of_day(world)) + 1
    assert summary.decided == len(rows) == summary.invoices - 1
    assert "INV-NEW-1" not in set(rows["invoice_id"])
    assert "1 invoice skipped: customer not in the features" in str(summary)


def test_features_older_than_the_invoice_date_are_warned_about(
    world: Settings, tmp_path: Path
) -> None:
    features = tmp_path / "features"
    shutil.copytree(world.features_dir, features)
    billing = pq.read_table(features / "customer_billing.parquet").to_pandas()
    older = billing[billing["event_timestamp"] < pd.Timestamp(INVOICE_DATE, tz="UTC")]
    older.to_parquet(features / "customer_billing.parquet", index=False)
    out = tmp_path / "decisions.parquet"
    summary = run_invoice_run(
        INVOICE_DATE, out, settings=world, features_dir=features, models=ChampionModels()
    )
    assert summary.decided == summary.invoices > 0
    assert len(summary.warnings) == 1
    assert "before the invoice date" in summary.warnings[0]
    assert "offers features build" in str(summary)


def test_feature_tables_an_earlier_release_built_are_named(world: Settings, tmp_path: Path) -> None:
    features = tmp_path / "features"
    shutil.copytree(world.features_dir, features)
    contract = pq.read_table(features / "customer_contract.parquet")
    pq.write_table(contract.drop(["contract_ended_on"]), features / "customer_contract.parquet")
    out = tmp_path / "decisions.parquet"
    with pytest.raises(ValueError, match=r"lacks contract_ended_on: .* `offers features build`"):
        run_invoice_run(
            INVOICE_DATE, out, settings=world, features_dir=features, models=ChampionModels()
        )
    assert not out.exists()


def test_missing_feature_tables_are_named(world: Settings, tmp_path: Path) -> None:
    out = tmp_path / "decisions.parquet"
    with pytest.raises(ValueError, match="offers features build"):
        run_invoice_run(
            INVOICE_DATE,
            out,
            settings=world,
            features_dir=tmp_path / "none",
            models=ChampionModels(),
        )
    assert not out.exists()


def test_a_champion_with_other_inputs_is_refused_before_anything_is_written(
    world: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "decisions.parquet"
    foreign = ChampionModels(ranker=ranker("5", names=["a", "b", "c"]), churn=churn("2"))
    with pytest.raises(ValueError, match="offer-ranker/5"):
        run_invoice_run(INVOICE_DATE, out, settings=world, models=foreign)
    assert not out.exists()


def test_pyspark_is_imported_only_when_the_spark_engine_decides() -> None:
    code = (
        "import sys, pipelines.invoice_run; print(sorted(m for m in sys.modules if 'pyspark' in m))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_feature_paths_are_the_feast_sources(world: Settings) -> None:
    from features.views import feature_table_path

    for view, path in feature_paths(world.features_dir).items():
        assert path == feature_table_path(view, world.features_dir)


# --- the frequency cap from offer_events ----------------------------------------------------------


def _events(rows: list[tuple[str, str, str, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "decision_id": decision,
                "invoice_id": f"I-{decision}",
                "customer_id": customer,
                "offer_id": offer,
                "shown_at": pd.Timestamp(shown, tz="UTC"),
                "outcome": outcome,
                "outcome_at": pd.Timestamp(at, tz="UTC") if at else pd.NaT,
            }
            for decision, customer, offer, shown, outcome, at in rows
        ]
    )


def test_declines_of_the_last_decisions_before_the_date_count() -> None:
    events = _events(
        [
            ("D1", "C1", "PLAN_30GB", "2026-06-01 06:00", "declined", "2026-06-03"),
            ("D2", "C1", "PLAN_60GB", "2026-08-01 06:00", "declined", "2026-08-02"),
            ("D2", "C1", "ADDON_DATA_10GB", "2026-08-01 06:00", "ignored", None),
            ("D3", "C1", "PLAN_15GB", "2026-09-01 06:00", "clicked", "2026-09-01"),
            ("D4", "C1", "PLAN_5GB", "2026-10-01 06:00", "declined", "2026-10-05"),
            # Shown on the invoice date itself: not a decision before it.
            ("D5", "C1", "PLAN_1GB", "2026-11-20 06:00", "declined", "2026-11-20 07:00"),
            # Declined only after the invoice date's start: not known yet.
            ("D6", "C2", "PLAN_30GB", "2026-11-10 06:00", "declined", "2026-11-21"),
            ("D7", "C3", "PLAN_30GB", "2026-11-10 06:00", "declined", None),
        ]
    )
    before = start_of_day(INVOICE_DATE)
    declines = recent_declines(events, before, invoices=3)
    # C1's last three decisions before the date are D2, D3, D4: D1's decline has aged out.
    assert declines == {
        "C1": frozenset({"PLAN_60GB", "PLAN_5GB"}),
        "C3": frozenset({"PLAN_30GB"}),
    }
    assert recent_declines(events, before, invoices=1) == {
        "C1": frozenset({"PLAN_5GB"}),
        "C3": frozenset({"PLAN_30GB"}),
    }
    assert recent_declines(events, before, invoices=0) == {}
    assert recent_declines(events, before, invoices=3, customer_ids=["C3"]) == {
        "C3": frozenset({"PLAN_30GB"})
    }


def test_a_customers_later_invoice_of_the_day_reaches_fewer_invoices_back() -> None:
    # C1's decisions before the date: D2 (PLAN_60GB declined), D3, D4 (PLAN_5GB declined).
    events = _events(
        [
            ("D2", "C1", "PLAN_60GB", "2026-08-01 06:00", "declined", "2026-08-02"),
            ("D3", "C1", "PLAN_15GB", "2026-09-01 06:00", "clicked", "2026-09-01"),
            ("D4", "C1", "PLAN_5GB", "2026-10-01 06:00", "declined", "2026-10-05"),
            ("D7", "C3", "PLAN_30GB", "2026-11-10 06:00", "declined", None),
        ]
    )
    # In the order they are decided: C1's three invoices of the day, C3's one.
    invoices = pd.DataFrame(
        {
            "invoice_id": ["I-1a", "I-1b", "I-1c", "I-3"],
            "customer_id": ["C1", "C1", "C1", "C3"],
        }
    )
    before = start_of_day(INVOICE_DATE)
    # A decision of the day's I-1b already exported (the API decided it, dated ahead): not an
    # invoice before the day's invoices, whatever it declined.
    events = pd.concat(
        [
            events,
            _events([("D9", "C1", "ADDON_DATA_10GB", "2026-11-19 23:00", "declined", None)]).assign(
                invoice_id="I-1b"
            ),
        ],
        ignore_index=True,
    )
    # With a cap of 3: the first reaches D2..D4; the second has I-1a among its last three, so
    # D3, D4; the third has I-1a and I-1b, so D4 alone. As the API decides them one by one.
    assert recent_declines_by_invoice(events, before, 3, invoices) == {
        "I-1a": frozenset({"PLAN_60GB", "PLAN_5GB"}),
        "I-1b": frozenset({"PLAN_5GB"}),
        "I-1c": frozenset({"PLAN_5GB"}),
        "I-3": frozenset({"PLAN_30GB"}),
    }
    # With a cap of 2: the third reaches nothing before the day; with 1, only the first does.
    assert recent_declines_by_invoice(events, before, 2, invoices) == {
        "I-1a": frozenset({"PLAN_5GB"}),
        "I-1b": frozenset({"PLAN_5GB"}),
        "I-3": frozenset({"PLAN_30GB"}),
    }
    assert recent_declines_by_invoice(events, before, 1, invoices) == {
        "I-1a": frozenset({"PLAN_5GB"}),
        "I-3": frozenset({"PLAN_30GB"}),
    }
    assert recent_declines_by_invoice(events, before, 0, invoices) == {}
    assert recent_declines_by_invoice(events, before, 3, invoices.iloc[:0]) == {}


# --- real decisions: the decision log ---------------------------------------------------------


def _with_log(world: Settings, folder: Path) -> Settings:
    return world.model_copy(update={"database_url": f"sqlite:///{folder / 'offers.db'}"})


def test_the_runs_decisions_are_replayed_by_the_api_and_take_events(
    world: Settings, local_run: tuple[InvoiceRunSummary, pd.DataFrame], tmp_path: Path
) -> None:
    _, rows = local_run
    shown = rows[rows["offers"].map(lambda text: len(json.loads(text)) > 0)].iloc[0]
    app = make_app(tmp_path, database_url=world.database_url)
    with running(app) as client:
        response = client.post(
            "/v1/offers",
            json={
                "invoice_id": shown["invoice_id"],
                "customer_id": shown["customer_id"],
                "invoice_date": INVOICE_DATE.isoformat(),
            },
            headers=auth("renderer"),
        )
        assert response.status_code == 200
        assert response.json()["decision_id"] == shown["decision_id"]
        assert response.text == (
            f'{{"decision_id":"{shown["decision_id"]}",' + shown["decision"][1:]
        )
        offer = json.loads(shown["offers"])[0]["offer_id"]
        event = client.post(
            "/v1/events",
            json={
                "event_id": "EV-RUN-1",
                "decision_id": shown["decision_id"],
                "offer_id": offer,
                "type": "impression",
                "occurred_at": just_now(),
            },
            headers=auth("renderer"),
        )
        assert event.status_code == 202


def test_a_second_run_replays_every_decision_and_writes_none(
    world: Settings,
    models: ChampionModels,
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
    tmp_path: Path,
) -> None:
    first, rows = local_run
    out = tmp_path / "again.parquet"
    summary = run_invoice_run(INVOICE_DATE, out, settings=world, models=models)
    assert (summary.logged, summary.replayed) == (0, first.decided)
    pd.testing.assert_frame_equal(pd.read_parquet(out), rows)
    log = DecisionLog(world.database_url)
    try:
        with log.engine.connect() as connection:
            stored = connection.exec_driver_sql("SELECT count(*) FROM decisions").scalar_one()
    finally:
        log.close()
    assert stored == len(rows)


def test_invoices_the_api_decided_first_keep_their_decisions(
    world: Settings,
    models: ChampionModels,
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
    tmp_path: Path,
) -> None:
    _, rows = local_run
    settings = _with_log(world, tmp_path)
    first, second = _records(rows.head(2))
    api_decision_id = "0b6f2c1e-5a3b-4c1d-9e8f-7a6b5c4d3e2f"
    log = DecisionLog(settings.database_url)
    try:
        for row, decision_id, customer in (
            (first, api_decision_id, first["customer_id"]),
            (second, str(uuid.uuid4()), "C-SOMEONE-ELSE"),
        ):
            log.record(
                DecisionRecord(
                    decision_id=decision_id,
                    invoice_id=row["invoice_id"],
                    customer_id=customer,
                    invoice_date=INVOICE_DATE,
                    created_at=dt.datetime(2026, 11, 19, tzinfo=dt.UTC),
                    policy="rules",
                    model_version=None,
                    experiment_key=None,
                    experiment_variant=None,
                    degraded=None,
                    consent={"marketing": True},
                    response_json=f'{{"decision_id":"{decision_id}",' + row["decision"][1:],
                    log={},
                    offers=(),
                )
            )
    finally:
        log.close()
    out = tmp_path / "decisions.parquet"
    summary = run_invoice_run(INVOICE_DATE, out, settings=settings, models=models)
    written = pd.read_parquet(out).set_index("invoice_id")
    assert written.loc[first["invoice_id"], "decision_id"] == api_decision_id
    assert written.loc[first["invoice_id"], "decision"] == first["decision"]
    assert second["invoice_id"] not in written.index
    assert (summary.replayed, summary.conflicts, summary.logged) == (1, 1, len(rows) - 2)
    assert summary.unknown_customers == 0
    assert "1 invoice not decided: the log holds their decision for another customer" in str(
        summary
    )


@pytest.mark.postgres
def test_a_run_on_postgresql_is_not_held_to_the_request_paths_deadline(
    world: Settings,
    models: ChampionModels,
    local_run: tuple[InvoiceRunSummary, pd.DataFrame],
    tmp_path: Path,
    postgres_url: str,
    pg_schema: str,
) -> None:
    """With OFFERS_DATABASE_TIMEOUT_MS shorter than any call to the log can be, requests get 503
    at once; the run, on a longer limit of its own, still writes every decision."""
    _, rows = local_run
    url = f"{postgres_url}?options=-csearch_path%3D{pg_schema}"
    settings = world.model_copy(update={"database_url": url, "database_timeout_ms": 0.001})
    request_path = DecisionLog.from_settings(settings)
    try:
        with pytest.raises(DecisionLogUnavailable):
            request_path.find(str(rows["invoice_id"].iloc[0]))
    finally:
        request_path.close()
    out = tmp_path / "decisions.parquet"
    summary = run_invoice_run(INVOICE_DATE, out, settings=settings, models=models)
    assert (summary.logged, summary.replayed) == (len(rows), 0)
    log = DecisionLog(url)
    try:
        stored = log.find_many(list(rows["invoice_id"]))
    finally:
        log.close()
    written = pd.read_parquet(out)
    assert {invoice: found.decision_id for invoice, found in stored.items()} == dict(
        zip(written["invoice_id"], written["decision_id"], strict=True)
    )


def test_a_running_experiment_assigns_each_customer_as_the_api_does(
    world: Settings, models: ChampionModels, tmp_path: Path
) -> None:
    settings = _with_log(world, tmp_path)
    variants = (
        Variant("treatment", 0.5, "model"),
        Variant("rules", 0.3, "rules"),
        Variant("control", 0.2, "holdout"),
    )
    log = DecisionLog(settings.database_url)
    try:
        Experiments(log).create(
            ExperimentSpec(
                key="ranker-vs-rules",
                description="",
                variants=variants,
                start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                end=dt.datetime(2026, 12, 31, tzinfo=dt.UTC),
            )
        )
    finally:
        log.close()
    out = tmp_path / "decisions.parquet"
    summary = run_invoice_run(INVOICE_DATE, out, settings=settings, models=models)
    assert summary.experiment == "ranker-vs-rules"
    assert "experiment: ranker-vs-rules" in str(summary)
    rows = pd.read_parquet(out)
    seen = set()
    for row in _records(rows):
        decision = json.loads(row["decision"])
        if decision["policy"] == "none":
            # No marketing consent, or an objection: enrolled in no experiment, as by the API.
            assert decision["experiment"] is None
            continue
        variant = assign_variant("ranker-vs-rules", row["customer_id"], variants)
        seen.add(variant.name)
        assert decision["experiment"] == {"key": "ranker-vs-rules", "variant": variant.name}
        if variant.policy == "holdout" and decision["consent"]["marketing"]:
            assert (decision["policy"], decision["offers"]) == ("holdout", [])
        if variant.policy == "rules":
            assert decision["policy"] in {"rules", "none", "non_personalised"}
    assert seen == {"treatment", "rules", "control"}


def test_a_logged_spark_run_beyond_this_machine_is_refused_with_a_sqlite_log(
    world: Settings, tmp_path: Path
) -> None:
    """Spark's tasks on other machines would each write a SQLite log of their own."""
    out = tmp_path / "decisions.parquet"
    cluster = world.model_copy(update={"spark_master": "spark://cluster.example:7077"})
    with pytest.raises(InvoiceRunError, match=r"SQLite file on this machine.*PostgreSQL"):
        run_invoice_run(INVOICE_DATE, out, "spark", settings=cluster, models=ChampionModels())
    assert not out.exists()


def test_the_executors_settings_name_the_log_absolutely_and_leave_the_secrets_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="sqlite:///logs/offers.db?synchronous=NORMAL",
        api_keys="renderer-key-0123456789:renderer",
        session_secret="a-secret-of-the-pages",  # type: ignore[arg-type]
        online_store="redis://:hunter2@cache.example:6379/0",
        spark_master="local[4]",
    )
    sent = executor_settings(settings)
    assert sent.database_url == f"sqlite:///{tmp_path / 'logs' / 'offers.db'}?synchronous=NORMAL"
    assert sent.api_keys == "" and sent.session_secret.get_secret_value() == ""
    assert "hunter2" not in sent.online_store
    assert (sent.mlflow_tracking_uri, sent.decline_cap_invoices) == (
        settings.mlflow_tracking_uri,
        settings.decline_cap_invoices,
    )
    postgres = settings.model_copy(
        update={"database_url": "postgresql://offers@db.example/offers?options=-csearch_path%3Dx"}
    )
    assert executor_settings(postgres).database_url == postgres.database_url


def test_a_spark_tasks_failure_is_named_by_its_innermost_error() -> None:
    failure = RuntimeError(
        "Job aborted due to stage failure: Task 3 in stage 2.0 failed 1 times\n"
        "Traceback (most recent call last):\n"
        '  File "spark.py", line 1, in decide\n'
        "serving.decision_log.circuit.DecisionLogUnavailable: the log did not answer\n"
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) unable to open database"
    )
    assert task_error_name(failure) == "OperationalError"
    assert task_error_name(RuntimeError("lost executor 1")) == "RuntimeError"


def test_a_registry_that_cannot_be_read_is_named_not_taken_for_the_decision_log(
    tmp_path: Path,
) -> None:
    corrupt = tmp_path / "mlflow.db"
    corrupt.write_bytes(b"not a database, whatever its name says\n" * 100)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        mlflow_tracking_uri=f"sqlite:///{corrupt}",
    )
    with pytest.raises(ValueError, match=r"the model registry \(MLFLOW_TRACKING_URI\) could not"):
        load_champions(settings)


def test_a_date_without_invoices_says_so_and_names_the_nearest_billing_dates(
    world: Settings, models: ChampionModels, tmp_path: Path
) -> None:
    invoices = read_table(world.data_dir, INVOICES)
    days = sorted(set(invoices["invoice_date"].dt.date))
    empty = INVOICE_DATE - dt.timedelta(days=1)
    assert empty not in days
    summary = run_invoice_run(
        empty, tmp_path / "none.parquet", settings=world, models=models, log_decisions=False
    )
    assert (summary.invoices, summary.decided) == (0, 0)
    before = max(day for day in days if day < empty)
    after = min(day for day in days if day > empty)
    assert summary.warnings == (
        f"no invoice in the invoices table is dated {empty.isoformat()} (the last before "
        f"{before.isoformat()}, the first after {after.isoformat()}); nothing was decided",
    )
    assert "warning: no invoice" in str(summary)
