"""The LightGBM scorer, the model holder's atomic swap, and POST /v1/admin/reload."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from serving.scoring_model import (
    LightGBMScorer,
    ModelHolder,
    ModelLoadFailed,
    ModelMismatch,
    check_inputs,
)
from tests.factories.api import (
    FakeRegistry,
    auth,
    churn,
    offers_body,
    ranker,
    store_experiment,
)
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES
from training.registry import LoadedModel, ModelInputsMismatch

ADMIN = auth("admin")
RENDERER = auth("renderer")


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(RANKER_FEATURES)))


def test_the_scorer_serves_calibrated_acceptance_contributions_and_churn() -> None:
    model, churn_model = ranker(), churn()
    scorer = LightGBMScorer(model, churn_model)
    rows = _rows(5)
    raw = np.asarray(model.booster.predict(rows, raw_score=True), dtype=float)
    assert scorer.acceptance(rows) == pytest.approx(1 / (1 + np.exp(-raw)))
    contributions = scorer.contributions(rows[:2])
    assert contributions.shape == (2, len(RANKER_FEATURES) + 1)
    assert contributions.sum(axis=1) == pytest.approx(raw[:2])  # TreeSHAP adds up to the score
    customers = rows[:, [RANKER_FEATURES.index(name) for name in CHURN_FEATURES]]
    expected = churn_model.predict_proba(customers)
    assert scorer.churn_risks(customers) == pytest.approx(expected)
    # One customer alone gets what it gets among others: the engine scores many at once.
    assert scorer.churn_risks(customers[2:3])[0] == expected[2]
    assert scorer.model_version == "offer-ranker/1"


def test_a_model_with_other_inputs_is_refused_naming_them() -> None:
    other = ranker("2", names=[*RANKER_FEATURES[:-1], "shoe_size"])
    with pytest.raises(ModelMismatch) as refused:
        check_inputs(other, RANKER_FEATURES)
    message = str(refused.value)
    assert "offer-ranker/2" in message
    assert f"lacks {RANKER_FEATURES[-1]}" in message and "has unknown shoe_size" in message
    reordered = ranker("3", names=[RANKER_FEATURES[1], RANKER_FEATURES[0], *RANKER_FEATURES[2:]])
    with pytest.raises(ModelMismatch, match="another order"):
        check_inputs(reordered, RANKER_FEATURES)


def test_a_reload_swaps_while_requests_in_flight_keep_their_models() -> None:
    registry = FakeRegistry()
    holder = ModelHolder(registry.loader())
    holder.start()
    in_flight = holder.current
    registry.champions["offer-ranker"] = ranker("2")
    holder.reload()
    assert holder.current is not in_flight
    assert holder.current.model_version == "offer-ranker/2"
    assert in_flight.model_version == "offer-ranker/1"
    assert in_flight.scorer is not None and len(in_flight.scorer.acceptance(_rows(3))) == 3


def test_scoring_during_reloads_never_fails() -> None:
    registry = FakeRegistry()
    holder = ModelHolder(registry.loader())
    holder.start()
    errors: list[BaseException] = []
    stop = threading.Event()

    def score() -> None:
        rows = _rows(4)
        while not stop.is_set():
            try:
                models = holder.current
                assert models.scorer is not None
                assert models.scorer.acceptance(rows).shape == (4,)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

    threads = [threading.Thread(target=score) for _ in range(3)]
    for thread in threads:
        thread.start()
    for version in range(2, 12):
        registry.champions["offer-ranker"] = ranker(str(version))
        holder.reload()
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and holder.current.model_version == "offer-ranker/11"


def test_a_refused_reload_keeps_the_serving_model() -> None:
    registry = FakeRegistry()
    holder = ModelHolder(registry.loader())
    before = holder.start()
    registry.champions["offer-ranker"] = ranker("2", names=[*RANKER_FEATURES[:-1], "shoe_size"])
    with pytest.raises(ModelMismatch):
        holder.reload()
    assert holder.current is before
    registry.champions["offer-ranker"] = OSError("registry down")
    with pytest.raises(ModelLoadFailed):
        holder.reload()
    assert holder.current is before


class _Unpredictable(LoadedModel):
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raise ValueError("corrupt trees")


def test_a_champion_that_fails_its_first_prediction_is_not_swapped_in() -> None:
    registry = FakeRegistry()
    holder = ModelHolder(registry.loader())
    before = holder.start()
    good = ranker("2")
    registry.champions["offer-ranker"] = _Unpredictable(
        booster=good.booster, version=good.version, feature_names=good.feature_names
    )
    with pytest.raises(ModelLoadFailed, match="offer-ranker/2 with churn-risk/1 failed"):
        holder.reload()
    assert holder.current is before


def test_start_without_a_champion_leaves_rules() -> None:
    holder = ModelHolder(FakeRegistry.empty().loader())
    models = holder.start()
    assert (models.scorer, models.unavailable) == (None, None)


def test_start_with_a_broken_registry_marks_the_model_unavailable() -> None:
    registry = FakeRegistry()
    registry.champions["churn-risk"] = OSError("disk")
    assert ModelHolder(registry.loader()).start().unavailable == "model_unavailable"


@pytest.fixture
def setup(client: Any, registry: FakeRegistry) -> Any:
    return client, registry


def test_admin_reload_loads_the_new_champion(setup: Any) -> None:
    client, registry = setup
    registry.champions["offer-ranker"] = ranker("2")
    response = client.post("/v1/admin/reload", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        "model_version": "offer-ranker/2",
        "churn_model_version": "churn-risk/1",
        "changed": True,
        "others_follow_within_seconds": 30.0,
    }
    body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert body["model_version"] == "offer-ranker/2"
    again = client.post("/v1/admin/reload", headers=ADMIN).json()
    assert again["changed"] is False


def test_a_reload_with_a_body_is_422_and_loads_nothing(setup: Any) -> None:
    client, registry = setup
    registry.champions["offer-ranker"] = ranker("2")
    refused = client.post("/v1/admin/reload", json={"version": "3"}, headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body"]
    body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert body["model_version"] == "offer-ranker/1"


@pytest.mark.parametrize(
    ("champion", "status", "named", "reason"),
    [
        (
            ranker("2", names=[*RANKER_FEATURES[:-1], "shoe_size"]),
            409,
            "has unknown shoe_size",
            "model_inputs_mismatch",
        ),
        (
            ModelInputsMismatch("offer-ranker/2 reads other inputs"),
            409,
            "reads other inputs",
            "model_inputs_mismatch",
        ),
        (LookupError("none"), 409, "offer-ranker has no champion version", "no_champion"),
        (
            OSError("model file missing"),
            503,
            "offer-ranker could not be loaded (OSError)",
            "registry_unavailable",
        ),
    ],
)
def test_a_refused_reload_is_a_problem_and_the_old_model_keeps_serving(
    setup: Any, champion: Any, status: int, named: str, reason: str
) -> None:
    client, registry = setup
    registry.champions["offer-ranker"] = champion
    response = client.post("/v1/admin/reload", headers=ADMIN)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert named in response.json()["detail"]
    assert response.json()["detail"].endswith("the serving model is kept")
    counted = client.app.state.services.metrics.registry.get_sample_value(
        "offers_model_reload_failures_total", {"reason": reason}
    )
    assert counted == 1.0
    body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert body["model_version"] == "offer-ranker/1"


def _challenger_experiment(policy: str) -> dict[str, Any]:
    return {
        "key": "challenger",
        "variants": [{"name": "challenger", "weight": 1.0, "policy": policy}],
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-31T00:00:00Z",
    }


def test_a_challenger_arm_decides_with_its_version(setup: Any) -> None:
    client, registry = setup
    registry.versions[("offer-ranker", "5")] = ranker("5")
    created = client.post(
        "/v1/experiments", json=_challenger_experiment("model:5"), headers=auth("admin")
    )
    assert created.status_code == 201
    body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert body["experiment"] == {"key": "challenger", "variant": "challenger"}
    assert (body["policy"], body["model_version"], body["degraded"]) == (
        "model",
        "offer-ranker/5",
        None,
    )


def test_a_model_variant_needs_admin_and_a_version_the_registry_serves(
    setup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, registry = setup
    registry.versions[("offer-ranker", "5")] = ranker("5")
    by_marketing = client.post(
        "/v1/experiments", json=_challenger_experiment("model:5"), headers=auth("marketing")
    )
    assert by_marketing.status_code == 403
    assert by_marketing.json()["detail"] == (
        "a variant served by a model version (model:<version>) needs the admin role"
    )
    unknown = client.post(
        "/v1/experiments", json=_challenger_experiment("model:77"), headers=auth("admin")
    )
    assert unknown.status_code == 422
    assert unknown.json()["type"].endswith("unknown-model-version")
    assert "model:77" in unknown.json()["detail"]
    # The caller's mistake is no fault of the service: a warning naming the version, no error.
    assert [r.levelname for r in caplog.records if r.name.startswith("serving")] == ["WARNING"]
    assert [getattr(r, "model", None) for r in caplog.records if r.levelname == "WARNING"] == [
        "offer-ranker/77"
    ]
    # Neither was stored.
    listed = client.get("/v1/experiments", headers=auth("marketing")).json()
    assert listed["count"] == 0


def test_holding_back_every_invoice_needs_admin(setup: Any) -> None:
    client, _ = setup
    holdout = _challenger_experiment("holdout")
    refused = client.post("/v1/experiments", json=holdout, headers=auth("marketing"))
    assert refused.status_code == 403
    assert "holds back every invoice" in refused.json()["detail"]
    assert client.post("/v1/experiments", json=holdout, headers=auth("admin")).status_code == 201


def test_a_challenger_that_cannot_load_falls_back_to_the_champion_marked(setup: Any) -> None:
    client, _ = setup
    store_experiment(client.app, _challenger_experiment("model:9"))
    body = client.post("/v1/offers", json=offers_body(), headers=RENDERER).json()
    assert (body["model_version"], body["degraded"]) == ("offer-ranker/1", "challenger_unavailable")
