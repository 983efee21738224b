"""Factories for the API tests: settings, keys, a feature source of a few customers, tiny models."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.settings import Settings
from features.consent_rows import ConsentRowWrite, OnlineConsentRow
from features.store import PROJECT
from features.views import FEATURE_VIEWS
from serving.app import Connectors, create_app
from serving.decision_log import DecisionLog, DecisionRecord, EventRecord, LoggedOffer
from serving.feature_reader import FeatureStoreUnavailable, OnlineFeatureSource
from serving.scoring_model import ModelLoader
from tests.factories.decision import account, consent, heavy_user, profile
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES
from training.registry import LoadedModel

REPOSITORY = Path(__file__).resolve().parents[2]
CATALOG = REPOSITORY / "catalog" / "offers.yaml"
INVOICE_DATE = "2026-11-30"
# When the fake store's consent rows were last changed, unless a write said otherwise.
CONSENT_STAMPED = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

KEYS = {
    "renderer": "renderer-key-0123456789",
    "marketing": "marketing-key-0123456789",
    "consent": "consent-key-0123456789",
    "admin": "admin-key-0123456789",
}


def just_now() -> str:
    """An event's ``occurred_at``: now, so after the decision the test made just before."""
    return dt.datetime.now(dt.UTC).isoformat()


def auth(role: str) -> dict[str, str]:
    """The Authorization header of a role's key (or of an unknown key for ``"wrong"``)."""
    key = KEYS.get(role, "not-a-known-key-0123456789")
    return {"Authorization": f"Bearer {key}"}


def api_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: a SQLite log in ``tmp_path``, the repository's catalog, a key per
    role."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'offers.db'}",
        "catalog": CATALOG,
        "api_keys": ",".join(f"{key}:{role}" for role, key in KEYS.items()),
        "data_dir": tmp_path / "raw",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


Row = dict[str, Any]


def customers() -> dict[str, tuple[Row, Row, Row]]:
    """A few customers by id: (consent, account, profile) rows as the online store holds them."""
    return {
        # Pays data overage on 5 GB, every consent: personalised offers with contributions.
        "C0001": (consent(), heavy_user(), profile()),
        # Content on 15 GB.
        "C0002": (consent(), account(), profile()),
        # Marketing but no profiling: the segment's fixed list.
        "C0003": (consent(profiling=False, usage_insights=False), heavy_user(), profile()),
        # No marketing consent: no offers, a usage summary all the same.
        "C0004": (consent(marketing=False), heavy_user(), profile()),
    }


class FakeFeatures:
    """An online feature source of a few customers; ``reads`` counts reads, ``fail`` makes them
    fail. Like a store behind a watchdog, it does not bound its own reads: the API decides in the
    thread pool. Consent rows written through it land in ``rows``, their times in
    ``consent_times`` (a customer without one is stamped ``CONSENT_STAMPED``)."""

    def __init__(self, rows: Mapping[str, tuple[Row, Row, Row]] | None = None) -> None:
        self.rows = dict(customers() if rows is None else rows)
        self.consent_times: dict[str, dt.datetime] = {}
        self.writes = 0
        self.reads = 0
        self.fail: str | None = None
        self.bounds_reads = False
        self.recently_failed = False
        self.closed = False

    def _row(self, customer_id: str, part: int) -> Row | None:
        self.reads += 1
        if self.fail is not None:
            raise FeatureStoreUnavailable(self.fail)
        found = self.rows.get(customer_id)
        return None if found is None else dict(found[part])

    def read_consent(self, customer_id: str) -> Row | None:
        return self._row(customer_id, 0)

    def read_account(self, customer_id: str) -> Row:
        return self._row(customer_id, 1) or {}

    def read_profile(self, customer_id: str) -> Row:
        return self._row(customer_id, 2) or {}

    def read_account_and_profile(self, customer_id: str) -> tuple[Row, Row]:
        return self.read_account(customer_id), self.read_profile(customer_id)

    def probe(self) -> None:
        self._row("# readiness #", 0)

    def read_consent_row(self, customer_id: str) -> OnlineConsentRow | None:
        row = self._row(customer_id, 0)
        if row is None:
            return None
        return OnlineConsentRow(row, self.consent_times.get(customer_id, CONSENT_STAMPED))

    def write_consent_row(self, row: ConsentRowWrite) -> None:
        if self.fail is not None:
            raise FeatureStoreUnavailable(self.fail)
        self.writes += 1
        found = self.rows.get(row.customer_id)
        if found is None:  # a customer a subclass makes up: keep the other rows it reads
            found = ({}, self._row(row.customer_id, 1) or {}, self._row(row.customer_id, 2) or {})
        self.rows[row.customer_id] = (dict(row.values), found[1], found[2])
        self.consent_times[row.customer_id] = row.event_time

    def close(self) -> None:
        self.closed = True


def _train(names: list[str], seed: int, signal: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(400, len(names)))
    labels = (features[:, signal] + rng.normal(scale=0.5, size=400) > 0).astype(float)
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 10,
        "verbosity": -1,
        "num_threads": 1,
        "deterministic": True,
    }
    return lgb.train(params, lgb.Dataset(features, labels, feature_name=names), num_boost_round=8)


@cache
def _boosters() -> tuple[lgb.Booster, lgb.Booster]:
    ranker_signal = RANKER_FEATURES.index("fit_saving_sek_per_month")
    churn_signal = CHURN_FEATURES.index("tenure_months")
    return _train(RANKER_FEATURES, 1, ranker_signal), _train(CHURN_FEATURES, 2, churn_signal)


def ranker(version: str = "1", names: list[str] | None = None) -> LoadedModel:
    """A tiny offer ranker; other ``names`` than RANKER_FEATURES make one serving must refuse."""
    booster = _boosters()[0] if names is None else _train(names, 3, 0)
    return LoadedModel(
        booster=booster,
        version=f"offer-ranker/{version}",
        feature_names=list(booster.feature_name()),
    )


def churn(version: str = "1") -> LoadedModel:
    booster = _boosters()[1]
    return LoadedModel(
        booster=booster, version=f"churn-risk/{version}", feature_names=list(booster.feature_name())
    )


class FakeRegistry:
    """Champions by model name, versions by (name, version); an exception value is raised.

    The ``champion`` alias of a model points at its champion's version; a LookupError champion is
    no alias, and another exception an alias to ``<name>/unloadable``, a version whose load
    raises it. ``down`` makes every lookup and load raise it (a registry that does not answer).
    """

    def __init__(self) -> None:
        self.champions: dict[str, LoadedModel | Exception] = {
            "offer-ranker": ranker(),
            "churn-risk": churn(),
        }
        self.versions: dict[tuple[str, str], LoadedModel | Exception] = {}
        self.down: Exception | None = None
        self.loads = 0
        self.lookups = 0

    @classmethod
    def empty(cls) -> FakeRegistry:
        registry = cls()
        registry.champions = {
            name: LookupError(f"{name} has no champion") for name in ("offer-ranker", "churn-risk")
        }
        return registry

    def _give(self, found: LoadedModel | Exception | None, what: str) -> LoadedModel:
        self.loads += 1
        if self.down is not None:
            raise self.down
        if found is None:
            raise LookupError(what)
        if isinstance(found, Exception):
            raise found
        return found

    def champion_version(self, name: str) -> str | None:
        """Where the ``champion`` alias of ``name`` points, as serving names versions."""
        self.lookups += 1
        if self.down is not None:
            raise self.down
        found = self.champions.get(name)
        if found is None or isinstance(found, LookupError):
            return None
        return found.version if isinstance(found, LoadedModel) else f"{name}/unloadable"

    def promote(self, ranker_version: str, churn_version: str) -> None:
        """Point both ``champion`` aliases at new tiny models of these versions."""
        self.champions = {
            "offer-ranker": ranker(ranker_version),
            "churn-risk": churn(churn_version),
        }

    def loader(self) -> ModelLoader:
        return ModelLoader(
            champion=lambda name: self._give(self.champions.get(name), name),
            version=lambda name, version: self._give(
                self.versions.get((name, version)), f"{name}/{version}"
            ),
            champion_version=self.champion_version,
        )


def connectors(
    features: OnlineFeatureSource | None = None,
    registry: FakeRegistry | None = None,
    open_features: Callable[[Settings], OnlineFeatureSource] | None = None,
) -> Connectors:
    """Connectors to fakes: ``features`` (default a FakeFeatures), ``registry`` (tiny models)."""
    source = FakeFeatures() if features is None else features
    models = FakeRegistry() if registry is None else registry
    return Connectors(
        open_features=open_features or (lambda settings: source),
        model_loader=lambda settings: models.loader(),
    )


def make_app(
    tmp_path: Path,
    *,
    features: OnlineFeatureSource | None = None,
    registry: FakeRegistry | None = None,
    open_features: Callable[[Settings], OnlineFeatureSource] | None = None,
    **settings: Any,
) -> FastAPI:
    return create_app(
        api_settings(tmp_path, **settings),
        connectors=connectors(features, registry, open_features),
    )


@contextmanager
def running(app: FastAPI) -> Iterator[TestClient]:
    """A client with the app's lifespan run (stores and models opened)."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# The feature views of a customer, and when the store's snapshot of the few customers is dated.
CUSTOMER_VIEWS = [view for view in FEATURE_VIEWS if view != "offer_attributes"]
SNAPSHOT = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


CustomerRows = Mapping[str, tuple[Row, Row, Row]]
"""(consent, account, profile) rows by customer id, as the online store holds them."""


def feature_frames(rows: CustomerRows | None = None) -> dict[str, pd.DataFrame]:
    """The few customers of ``customers()`` (or ``rows``) as feature tables, one snapshot each."""
    frames = {}
    rows = customers() if rows is None else rows
    for view in CUSTOMER_VIEWS:
        records = []
        for customer_id, (consent_row, account_row, profile_row) in rows.items():
            values = {**consent_row, **account_row, **profile_row}
            records.append(
                {
                    CUSTOMER_KEY: customer_id,
                    EVENT_TIMESTAMP: SNAPSHOT,
                    **{name: values.get(name) for name in FEATURE_VIEWS[view]},
                }
            )
        frames[view] = pd.DataFrame.from_records(records)
    return frames


def build_feast_store(
    settings: Settings,
    project: str = PROJECT,
    rows: CustomerRows | None = None,
) -> None:
    """A real Feast store of the few customers (or ``rows``) and the catalog's offers: feature
    tables, registry, online store."""
    from core.catalog import load_catalog
    from features.pipeline import write_feature_tables
    from features.store import apply_repository, materialize
    from features.transforms.offer_attributes import offer_features

    frames = feature_frames(rows)
    frames["offer_attributes"] = offer_features(load_catalog(settings.catalog))
    write_feature_tables(frames, Path(settings.features_dir))
    apply_repository(settings, project)
    materialize(
        dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
        settings,
        views=[*CUSTOMER_VIEWS, "offer_attributes"],
        project=project,
        show_progress=False,
    )


def offers_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "invoice_id": "INV-2026-11-0001",
        "customer_id": "C0001",
        "invoice_date": INVOICE_DATE,
        "locale": "sv",
        "max_offers": 3,
    }
    body.update(overrides)
    return body


class SlowStore:
    """A Feast-like store whose reads take ``delay`` seconds or raise ``error``."""

    def __init__(self, rows: Mapping[str, Row] | None = None, *, delay: float = 0.0) -> None:
        self.rows = dict(rows or {})
        self.delay = delay
        self.error: Exception | None = None
        self.asked: list[list[str]] = []

    def get_online_features(self, features: list[str], entity_rows: list[dict[str, Any]]) -> Any:
        self.asked.append(list(features))
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        ids = [row["customer_id"] for row in entity_rows]
        names = [reference.split(":", 1)[1] for reference in features]
        values: dict[str, list[Any]] = {"customer_id": ids}
        values.update({name: [self.rows.get(c, {}).get(name) for c in ids] for name in names})
        return _Response(values)


class _Response:
    def __init__(self, values: dict[str, list[Any]]) -> None:
        self._values = values

    def to_dict(self) -> dict[str, list[Any]]:
        return self._values


def log_decision(
    log: DecisionLog,
    variant: str,
    customer: str,
    accepted: bool,
    offers: int = 2,
    experiment: str = "ranker-vs-rules",
    saving: float | None = None,
    at: dt.datetime | None = None,
) -> str:
    """Log one experiment decision with ``offers`` shown, impressions and a click, and maybe an
    accept (of PLAN_1, whose customer saving the engine logged as ``saving`` a month), made
    ``at`` (default 2026-12-05); returns its decision_id. For reports on a hand-made log."""
    decision_id = str(uuid.uuid4())
    shown = tuple(LoggedOffer(f"PLAN_{i}", i + 1, 1.0, None) for i in range(offers))
    now = at or dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    candidates = [
        {"offer_id": f"PLAN_{i}", "customer_saving_sek_per_month": saving if i == 1 else None}
        for i in range(offers)
    ]
    log.record(
        DecisionRecord(
            decision_id=decision_id,
            invoice_id=f"INV-{decision_id}",
            customer_id=customer,
            invoice_date=now.date(),
            created_at=now,
            policy="model" if offers else "holdout",
            model_version=None,
            experiment_key=experiment,
            experiment_variant=variant,
            degraded=None,
            consent={"marketing": True},
            response_json="{}",
            log={"candidates": candidates},
            offers=shown,
        )
    )
    if offers:
        # A click without an accept does not count as accepted.
        for prefix, kind, offer in (("I", "impression", "PLAN_0"), ("C", "click", "PLAN_1")):
            log.record_event(
                EventRecord(f"{prefix}-{decision_id}", decision_id, offer, kind, now, now)
            )
    if accepted:
        log.record_event(EventRecord(f"A-{decision_id}", decision_id, "PLAN_1", "accept", now, now))
    return decision_id


def opens_on_third_try(store: Any) -> tuple[Callable[[Settings], Any], list[int]]:
    """A feature-store opener that fails at start and on the first request, then opens ``store``;
    and the list of its attempts."""
    attempts: list[int] = []

    def open_features(settings: Settings) -> Any:
        attempts.append(1)
        if len(attempts) < 3:  # down at start and on the first request
            raise ConnectionError("store not there yet")
        return store

    return open_features, attempts


def store_experiment(app: FastAPI, body: dict[str, Any]) -> None:
    """An experiment stored as another worker (or an earlier release) stored it, without the
    route's checks: for arms whose model version cannot be served here."""
    from serving.api.schemas import ExperimentCreate

    app.state.services.experiments.create(ExperimentCreate.model_validate(body).spec())


def feast_settings(base: Path, **overrides: Any) -> Settings:
    """Settings whose feature tables and Feast store live under ``base``."""
    return api_settings(base, features_dir=base / "features", feast_dir=base / "feast", **overrides)


def feast_app(settings: Settings, project: str) -> FastAPI:
    """The app over the real store of ``settings`` in ``project``, with the fake registry."""
    from serving.feature_reader import open_feast_source

    return create_app(
        settings,
        connectors=Connectors(
            open_features=lambda opened: open_feast_source(opened, project),
            model_loader=lambda opened: FakeRegistry().loader(),
        ),
    )


def counting_writes(log: DecisionLog, monkeypatch: Any) -> list[int]:
    """The size of each write of decisions to ``log`` (``record_many``), from now on."""
    writes: list[int] = []
    write = log.record_many

    def counted(pending: Any) -> Any:
        writes.append(len(pending))
        return write(pending)

    monkeypatch.setattr(log, "record_many", counted)
    return writes
