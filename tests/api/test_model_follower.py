"""Every worker follows the registry's champion: the follower's one step, its thread, the app's
lifespan, its metrics, and answers that each name the one pair of models that decided them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving.metrics import ApiMetrics
from serving.model_follower import ChampionFollower, FollowOutcome
from serving.scoring_model import ModelHolder
from tests.factories.api import (
    FakeRegistry,
    auth,
    churn,
    make_app,
    offers_body,
    ranker,
    running,
)
from training.model_inputs import RANKER_FEATURES

RENDERER = auth("renderer")


def follower_of(
    registry: FakeRegistry,
    *,
    challengers: Iterable[str] = (),
    interval_seconds: float = 30.0,
) -> tuple[ChampionFollower, ModelHolder, ApiMetrics]:
    """A worker's holder started on ``registry``, and a follower of it with its own metrics."""
    holder = ModelHolder(registry.loader())
    holder.start()
    metrics = ApiMetrics()
    follower = ChampionFollower(
        holder,
        metrics=metrics,
        challengers=lambda: list(challengers),
        interval_seconds=interval_seconds,
    )
    return follower, holder, metrics


def failures(metrics: ApiMetrics, reason: str) -> float:
    counted = metrics.registry.get_sample_value(
        "offers_model_reload_failures_total", {"reason": reason}
    )
    return counted or 0.0


def served(holder: ModelHolder) -> tuple[str | None, str | None]:
    return holder.current.model_version, holder.current.churn_model_version


def test_a_newly_promoted_champion_is_loaded_and_then_only_looked_up() -> None:
    registry = FakeRegistry()
    follower, holder, _ = follower_of(registry)
    assert follower.follow_once() is FollowOutcome.CURRENT
    registry.promote("2", "2")
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/2", "churn-risk/2")
    assert holder.current.loaded_at is not None
    loads = registry.loads
    assert follower.follow_once() is FollowOutcome.CURRENT
    assert registry.loads == loads  # an unchanged alias costs a lookup, no model load


def test_a_promotion_of_the_churn_model_alone_is_followed() -> None:
    registry = FakeRegistry()
    follower, holder, _ = follower_of(registry)
    registry.champions["churn-risk"] = churn("2")
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/1", "churn-risk/2")


def test_a_champion_that_failed_to_load_at_start_is_loaded_once_the_registry_answers() -> None:
    registry = FakeRegistry()
    registry.down = ConnectionError("registry not there yet")
    follower, holder, metrics = follower_of(registry)
    assert holder.current.unavailable == "model_unavailable"
    assert follower.follow_once() is FollowOutcome.REGISTRY_UNAVAILABLE
    assert holder.current.scorer is None and failures(metrics, "registry_unavailable") == 1.0
    registry.down = None
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/1", "churn-risk/1")
    assert holder.current.unavailable is None


def test_a_champion_promoted_after_a_start_without_one_is_loaded() -> None:
    registry = FakeRegistry.empty()
    follower, holder, _ = follower_of(registry)
    assert follower.follow_once() is FollowOutcome.NO_CHAMPION
    assert (holder.current.scorer, holder.current.unavailable) == (None, None)  # rules decide
    registry.promote("1", "1")
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/1", "churn-risk/1")


def test_a_registry_that_does_not_answer_keeps_the_models_and_is_counted() -> None:
    registry = FakeRegistry()
    follower, holder, metrics = follower_of(registry)
    serving = holder.current
    registry.promote("2", "2")
    registry.down = TimeoutError("registry timed out")
    assert follower.follow_once() is FollowOutcome.REGISTRY_UNAVAILABLE
    assert follower.follow_once() is FollowOutcome.REGISTRY_UNAVAILABLE  # asked again each poll
    assert holder.current is serving
    assert failures(metrics, "registry_unavailable") == 2.0
    registry.down = None
    assert follower.follow_once() is FollowOutcome.LOADED


def test_a_champion_whose_file_cannot_be_read_keeps_the_models_and_is_retried() -> None:
    registry = FakeRegistry()
    follower, holder, metrics = follower_of(registry)
    serving = holder.current
    registry.champions["offer-ranker"] = OSError("model file missing")
    assert follower.follow_once() is FollowOutcome.REGISTRY_UNAVAILABLE
    assert holder.current is serving and failures(metrics, "registry_unavailable") == 1.0
    loads = registry.loads
    assert follower.follow_once() is FollowOutcome.REGISTRY_UNAVAILABLE
    assert registry.loads > loads  # a load failure may pass: the next poll tries again


def test_a_champion_with_other_inputs_is_refused_once_until_an_alias_moves() -> None:
    registry = FakeRegistry()
    follower, holder, metrics = follower_of(registry)
    serving = holder.current
    registry.champions["offer-ranker"] = ranker("2", names=[*RANKER_FEATURES[:-1], "shoe_size"])
    assert follower.follow_once() is FollowOutcome.REFUSED
    loads = registry.loads
    assert follower.follow_once() is FollowOutcome.REFUSED
    # The same pair would be refused every time: it is not loaded again, nor counted again.
    assert registry.loads == loads and failures(metrics, "model_inputs_mismatch") == 1.0
    assert holder.current is serving
    registry.promote("3", "1")
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/3", "churn-risk/1")


def test_a_removed_alias_keeps_the_serving_models() -> None:
    registry = FakeRegistry()
    follower, holder, metrics = follower_of(registry)
    serving = holder.current
    registry.champions["churn-risk"] = LookupError("alias removed")
    assert follower.follow_once() is FollowOutcome.NO_CHAMPION
    assert holder.current is serving and failures(metrics, "registry_unavailable") == 0.0


def test_the_challengers_of_running_experiments_are_loaded_with_a_new_champion() -> None:
    registry = FakeRegistry()
    registry.versions[("offer-ranker", "5")] = ranker("5")
    follower, holder, _ = follower_of(registry, challengers=["model:5"])
    registry.promote("2", "2")
    assert follower.follow_once() is FollowOutcome.LOADED
    challenger = holder.current.challenger("model:5")
    assert challenger is not None
    # A challenger scores with the champion's churn model: the new one.
    assert (challenger.model_version, challenger.churn_model_version) == (
        "offer-ranker/5",
        "churn-risk/2",
    )


def test_without_the_experiments_the_loaded_challengers_are_kept() -> None:
    registry = FakeRegistry()
    registry.versions[("offer-ranker", "5")] = ranker("5")
    holder = ModelHolder(registry.loader())
    holder.start(["model:5"])

    def experiments_unreadable() -> list[str]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    follower = ChampionFollower(
        holder, metrics=ApiMetrics(), challengers=experiments_unreadable, interval_seconds=30.0
    )
    registry.promote("2", "2")
    assert follower.follow_once() is FollowOutcome.LOADED
    assert holder.current.challenger("model:5") is not None


def _wait_for(condition: Any, seconds: float) -> float:
    """Seconds until ``condition()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.01)
    return time.monotonic() - started


def test_the_follower_thread_follows_within_its_interval_and_stops() -> None:
    registry = FakeRegistry()
    follower, holder, _ = follower_of(registry, interval_seconds=0.05)
    follower.start()
    try:
        assert follower.running
        registry.promote("2", "2")
        _wait_for(lambda: served(holder) == ("offer-ranker/2", "churn-risk/2"), 5.0)
    finally:
        follower.stop()
    assert not follower.running
    registry.promote("3", "3")
    time.sleep(0.2)
    assert served(holder) == ("offer-ranker/2", "churn-risk/2")  # stopped: no more looks


def test_the_follower_thread_outlives_a_step_that_raises() -> None:
    registry = FakeRegistry()
    follower, holder, _ = follower_of(registry, interval_seconds=0.05)
    steps: list[int] = []
    real_step = follower.follow_once

    def flaky_step() -> FollowOutcome:
        steps.append(1)
        if len(steps) == 1:
            raise RuntimeError("unexpected")
        return real_step()

    follower.follow_once = flaky_step  # type: ignore[method-assign]
    follower.start()
    try:
        registry.promote("2", "2")
        _wait_for(lambda: served(holder) == ("offer-ranker/2", "churn-risk/2"), 5.0)
    finally:
        follower.stop()


# In the app ---------------------------------------------------------------------------------


def test_the_lifespan_starts_the_follower_and_stops_it(tmp_path: Path) -> None:
    registry = FakeRegistry()
    app = make_app(tmp_path, registry=registry, model_poll_seconds=1.0)
    with running(app) as client:
        follower = app.state.services.follower
        assert follower.running and follower.interval_seconds == 1.0
        registry.promote("2", "2")
        _wait_for(
            lambda: client.get("/health/ready").json()["model_version"] == "offer-ranker/2", 5.0
        )
        body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
        assert body["model_version"] == "offer-ranker/2"
    assert not follower.running


def test_an_app_whose_champion_failed_at_start_answers_with_it_once_followed(
    tmp_path: Path,
) -> None:
    registry = FakeRegistry()
    registry.down = ConnectionError("registry not there yet")
    app = make_app(tmp_path, registry=registry)
    with running(app) as client:
        first = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
        assert (first["policy"], first["degraded"]) == ("fallback", "model_unavailable")
        registry.down = None
        assert app.state.services.follower.follow_once() is FollowOutcome.LOADED
        second = client.post(
            "/v1/offers", json=offers_body(invoice_id="INV-2026-11-0002"), headers=RENDERER
        ).json()
        assert (second["policy"], second["model_version"], second["degraded"]) == (
            "model",
            "offer-ranker/1",
            None,
        )


def test_metrics_name_the_served_versions_and_count_failed_reloads(tmp_path: Path) -> None:
    registry = FakeRegistry()
    app = make_app(tmp_path, registry=registry)
    with running(app) as client:
        text = client.get("/metrics").text
        assert (
            'offers_model_loaded_at_seconds{churn_model_version="churn-risk/1",'
            'model_version="offer-ranker/1"}'
        ) in text
        registry.promote("2", "2")
        app.state.services.follower.follow_once()
        registry.down = ConnectionError("registry away")
        app.state.services.follower.follow_once()
        text = client.get("/metrics").text
        assert 'model_version="offer-ranker/2"' in text
        assert 'model_version="offer-ranker/1"' not in text  # one sample: the served pair
        assert 'offers_model_reload_failures_total{reason="registry_unavailable"} 1.0' in text


# One pair per answer ------------------------------------------------------------------------


def test_every_answer_names_the_one_pair_that_decided_it_while_models_swap(
    tmp_path: Path,
) -> None:
    """Requests in four threads while the follower swaps between two pairs: each answer and its
    logged decision name the same ranker, and the logged churn model is that ranker's partner."""
    registry = FakeRegistry()
    app = make_app(tmp_path, registry=registry)
    pairs = {"offer-ranker/1": "churn-risk/1", "offer-ranker/2": "churn-risk/2"}
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    requests_done = threading.Event()
    swaps = 0
    with running(app) as client:
        follower = app.state.services.follower

        def swap() -> None:
            nonlocal swaps
            while not requests_done.is_set():
                version = "2" if swaps % 2 == 0 else "1"
                registry.promote(version, version)
                assert follower.follow_once() is FollowOutcome.LOADED
                swaps += 1

        def ask(thread: int) -> None:
            try:
                for number in range(25):
                    invoice = f"INV-SWAP-{thread}-{number}"
                    response = client.post(
                        "/v1/offers", json=offers_body(invoice_id=invoice), headers=RENDERER
                    )
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        swapper = threading.Thread(target=swap)
        askers = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        swapper.start()
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
        requests_done.set()
        swapper.join()
        log = app.state.services.log
        with log.engine.connect() as connection:
            decisions = log.tables.decisions
            rows = {
                row.decision_id: row
                for row in connection.execute(
                    sa.select(decisions.c.decision_id, decisions.c.model_version, decisions.c.log)
                )
            }
    assert errors == []
    assert len(answers) == 100 and swaps >= 2
    for answer in answers:
        assert answer["policy"] == "model" and answer["model_version"] in pairs
        row = rows[answer["decision_id"]]
        assert row.model_version == answer["model_version"]
        assert row.log["churn_model_version"] == pairs[answer["model_version"]]
    assert {answer["model_version"] for answer in answers} == set(pairs)


# Against a real MLflow registry ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_the_follower_follows_a_promotion_in_a_real_mlflow_registry(tmp_path: Path) -> None:
    from core.settings import Settings
    from serving.scoring_model import ModelLoader
    from tests.factories.training import log_version
    from training import tracking

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "raw",
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        mlflow_artifact_root=tmp_path / "mlruns" / "artifacts",
    )
    holder = ModelHolder(ModelLoader.from_registry(settings))
    holder.start()  # nothing registered yet: rules decide
    metrics = ApiMetrics()
    follower = ChampionFollower(
        holder, metrics=metrics, challengers=list, interval_seconds=settings.model_poll_seconds
    )
    assert follower.follow_once() is FollowOutcome.NO_CHAMPION
    log_version(settings, "offer-ranker", {"val_ndcg_at_3": 0.6})
    log_version(settings, "churn-risk", {"val_auc": 0.7})
    tracking.set_champion("offer-ranker", "1", settings)
    assert follower.follow_once() is FollowOutcome.NO_CHAMPION  # churn-risk has no champion yet
    tracking.set_champion("churn-risk", "1", settings)
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/1", "churn-risk/1")
    # Version 2 registered from version 1's files: a new version as the registry sees it,
    # without the cost of another training run.
    client = tracking.client(settings)
    first = client.get_model_version("offer-ranker", "1")
    client.create_model_version("offer-ranker", first.source, first.run_id)
    tracking.set_champion("offer-ranker", "2", settings)
    assert follower.follow_once() is FollowOutcome.LOADED
    assert served(holder) == ("offer-ranker/2", "churn-risk/1")
    assert follower.follow_once() is FollowOutcome.CURRENT
    assert failures(metrics, "registry_unavailable") == 0.0
