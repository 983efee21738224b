"""Input drift on the shared simulated world: the trained champion's own input profile against
decisions the engine makes with it for the world's customers, as they are and with their data
usage shifted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import pytest

from core.catalog import load_catalog
from core.columns import CUSTOMER_KEY
from pipelines.frame_source import FrameFeatureSource, read_decision_frames, start_of_day
from pipelines.invoice_run.core import feature_paths
from serving.decision.engine import decide
from serving.decision.inputs import DecisionRequest, UnknownCustomerError
from serving.scoring_model import LightGBMScorer
from tests.simulated_world import SimulatedWorld
from training.drift import DriftThresholds, FeatureDrift, input_drift, profile_of
from training.model_inputs import MONITORED_INPUTS
from training.registry import CHURN_MODEL, RANKER_MODEL, load_champion

pytestmark = pytest.mark.integration

INVOICE_DATE = dt.date(2026, 11, 30)
CUSTOMERS = 1_500
DATA_SHIFT = 2.5


class ShiftedUsage:
    """The world's features with every data usage figure times ``factor``."""

    def __init__(self, source: FrameFeatureSource, factor: float) -> None:
        self.source, self.factor = source, factor

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        return self.source.read_consent(customer_id)

    def read_account(self, customer_id: str) -> dict[str, Any]:
        return self._shifted(self.source.read_account(customer_id))

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        account, profile = self.source.read_account_and_profile(customer_id)
        return self._shifted(account), profile

    def _shifted(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: value * self.factor
            if name.startswith("data_gb") and isinstance(value, int | float)
            else value
            for name, value in row.items()
        }


@pytest.fixture(scope="module")
def served(simulated_world: SimulatedWorld) -> Iterator[tuple[Any, ...]]:
    settings = simulated_world.settings
    ranker = load_champion(RANKER_MODEL, settings)
    scorer = LightGBMScorer(ranker, load_champion(CHURN_MODEL, settings))
    customers = pd.read_parquet(settings.data_dir / "customers.parquet")[CUSTOMER_KEY]
    chosen = customers.sample(CUSTOMERS, random_state=0).astype(str).tolist()
    as_of = start_of_day(INVOICE_DATE)
    frames = read_decision_frames(feature_paths(settings.features_dir), as_of, chosen)
    source = FrameFeatureSource.from_frames(frames, as_of)
    yield profile_of(ranker.metadata), scorer, source, load_catalog(settings.catalog), chosen


def model_inputs(served: tuple[Any, ...], shift: float) -> pd.DataFrame:
    _, scorer, source, catalog, chosen = served
    reader = source if shift == 1.0 else ShiftedUsage(source, shift)
    rows = []
    for number, customer_id in enumerate(chosen):
        request = DecisionRequest(f"INV-M-{number}", customer_id, INVOICE_DATE, "sv", 3)
        try:
            decision = decide(
                request,
                reader,
                catalog,
                policy="model",
                scorer=scorer,
                recently_declined=frozenset(),
            )
        except UnknownCustomerError:
            continue
        if decision.model_inputs is not None:
            rows.append(decision.model_inputs)
    return pd.DataFrame.from_records(rows, columns=MONITORED_INPUTS)


def drift(served: tuple[Any, ...], shift: float) -> dict[str, FeatureDrift]:
    profile = served[0]
    assert profile is not None
    recent = model_inputs(served, shift)
    assert len(recent) >= 300
    return {d.feature: d for d in input_drift(profile, recent, DriftThresholds())}


# Inputs whose distribution neither the passing months nor the shift moves.
STEADY = (
    "voice_minutes_avg_3m",
    "tenure_months",
    "age_band",
    "satisfaction_band",
    "segment_is_business",
)
SHIFTED = ("data_gb_m1", "data_gb_avg_3m", "data_gb_max_3m")


def test_the_world_as_it_is_stays_below_warn_except_where_its_history_grew(
    served: tuple[Any, ...],
) -> None:
    found = drift(served, 1.0)
    warn = DriftThresholds().psi_warn
    for name in (*STEADY, *SHIFTED):
        psi = found[name].psi
        assert psi is not None and psi < warn, (name, psi)
    # The training window starts when the world's customers had less than six months of
    # history: half their sixth-month values were missing then, few are now. A real change of
    # what the model sees, and the monitor says so.
    profile = served[0]
    assert profile.features["data_gb_m6"].shares[-1] > 0.4
    assert found["data_gb_m6"].status == "alert"


def test_the_world_with_its_data_usage_shifted_alerts_on_the_usage_inputs_only(
    served: tuple[Any, ...],
) -> None:
    as_it_is = drift(served, 1.0)
    found = drift(served, DATA_SHIFT)
    alert = DriftThresholds().psi_alert
    for name in SHIFTED:
        psi = found[name].psi
        assert psi is not None and psi >= alert, (name, psi)
        assert found[name].status == "alert"
    for name in STEADY:
        assert found[name].psi == as_it_is[name].psi, name
        assert found[name].status == "ok"
