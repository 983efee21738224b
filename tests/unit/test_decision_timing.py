"""The decision's own cost per request, with real (tiny) LightGBM boosters.

The request budget is a few milliseconds at p99 for the whole API call; the engine's share is
measured here over 1000 decisions for a customer with twelve eligible candidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pytest

from serving.decision.engine import decide
from tests.factories_decision import (
    BoosterScorer,
    FakeFeatureSource,
    heavy_user,
    make_catalog,
    request,
)
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES

CALLS = 1000
# Wall time on a shared two-core machine follows the neighbours' load more than this code, so the
# budget is on the CPU time the decision itself takes; both are printed and kept as properties.
CPU_P50_BUDGET_MS = 10.0


def _tiny_booster(columns: list[str], seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2000, len(columns)))
    labels = (features[:, 0] + rng.normal(size=2000) > 0.5).astype(float)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "max_depth": 5,
        "verbosity": -1,
        "num_threads": 1,
        "seed": seed,
    }
    data = lgb.Dataset(features, label=labels, feature_name=columns)
    return lgb.train(params, data, num_boost_round=100)


@pytest.mark.slow
def test_decide_time_with_real_boosters(
    record_property: Callable[[str, object], None],
) -> None:
    catalog = make_catalog()
    scorer = BoosterScorer(_tiny_booster(RANKER_FEATURES, 1), _tiny_booster(CHURN_FEATURES, 2))
    source = FakeFeatureSource(account_row=heavy_user(invoice_fee_last_sek=29.0))
    decision = decide(
        request(), source, catalog, policy="model", scorer=scorer, recently_declined=frozenset()
    )
    scored = [c for c in decision.candidates if c.acceptance_probability is not None]
    assert len(scored) == 12
    assert decision.policy == "model" and len(decision.offers) == 3

    wall, cpu = [], []
    for _ in range(CALLS):
        started, started_cpu = time.perf_counter(), time.thread_time()
        decide(
            request(), source, catalog, policy="model", scorer=scorer, recently_declined=frozenset()
        )
        cpu.append((time.thread_time() - started_cpu) * 1000.0)
        wall.append((time.perf_counter() - started) * 1000.0)
    figures = {
        "wall_p50_ms": float(np.percentile(wall, 50)),
        "wall_p99_ms": float(np.percentile(wall, 99)),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
    }
    for name, value in figures.items():
        record_property(f"decide_{name}", round(value, 3))
    print(f"decide() over {CALLS} calls: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    assert figures["cpu_p50_ms"] < CPU_P50_BUDGET_MS
