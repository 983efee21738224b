"""The simulated world the integration tests share, built once per test session.

Two session fixtures, so that a test pays only for what it uses:

- ``simulated_tables``: the simulator's tables (4,000 customers × 15 months ending November
  2026, seed 11), ground truth and survey included;
- ``simulated_world``: the same folder after ``offers retrain``: feature tables, the Feast
  registry and its SQLite online store materialised, and both models trained, evaluated and
  promoted to champion in a SQLite MLflow store.

The world is only read. A test that changes it (another training, a promotion, a
materialisation) works on ``SimulatedWorld.copy`` or points the changed store elsewhere.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from core.settings import Settings

if TYPE_CHECKING:
    from pipelines.retrain import RetrainResult
    from pipelines.simulation.world import SimulationSummary
    from training.train import TrainResult

CATALOG = Path(__file__).resolve().parents[1] / "catalog" / "offers.yaml"
CUSTOMERS = 4_000
MONTHS = 15
SEED = 11
END_MONTH = dt.date(2026, 11, 1)


def world_settings(root: Path, **overrides: Any) -> Settings:
    """Settings with every table and store under ``root`` and no developer's ``.env``."""
    values: dict[str, Any] = {
        "data_dir": root / "raw",
        "catalog": CATALOG,
        "features_dir": root / "features",
        "feast_dir": root / "feast",
        "database_url": f"sqlite:///{root / 'offers.db'}",
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        "mlflow_artifact_root": root / "mlruns" / "artifacts",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass(frozen=True)
class SimulatedTables:
    """The simulator's tables in ``settings.data_dir``, and what ``simulate`` reported."""

    root: Path
    settings: Settings
    simulation: SimulationSummary


@dataclass(frozen=True)
class SimulatedWorld:
    """The simulated tables with everything ``offers retrain`` makes of them."""

    root: Path
    settings: Settings
    simulation: SimulationSummary
    retrain: RetrainResult

    @property
    def trained(self) -> TrainResult:
        """What the retrain's training step returned: both models, metrics and versions."""
        trained: TrainResult = self.retrain.values["train"]
        return trained

    def copy(self, root: Path, **overrides: Any) -> Settings:
        """Copy the whole world to ``root`` and return settings for the copy.

        MLflow keeps absolute artifact locations and Feast absolute feature-table paths; both
        are pointed at the copy, so nothing done to it reaches the shared world.
        """
        from features.store import apply_repository

        shutil.copytree(self.root, root, dirs_exist_ok=True)
        copied = world_settings(root, **overrides)
        _move_paths(Path(copied.mlflow_tracking_uri.removeprefix("sqlite:///")), self.root, root)
        apply_repository(copied)
        return copied


def _move_paths(database: Path, old: Path, new: Path) -> None:
    """Rewrite every path under ``old`` in a SQLite database to the same path under ``new``,
    as written and as in a ``file://`` URI."""
    target = f"{new.resolve()}/"
    replacements: dict[str, str] = {}
    for root in (f"{old}/", f"{old.resolve()}/"):
        replacements[root] = target
        replacements[quote(root)] = quote(target)
    with closing(sqlite3.connect(database)) as connection, connection:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                for before, after in replacements.items():
                    connection.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (before, after, before),
                    )


@pytest.fixture(scope="session")
def simulated_tables(tmp_path_factory: pytest.TempPathFactory) -> SimulatedTables:
    """The simulator's tables of the shared world, written once per session."""
    from core.catalog import load_catalog
    from pipelines.simulation.world import simulate

    root = tmp_path_factory.mktemp("simulated-world")
    settings = world_settings(root)
    simulation = simulate(
        customers=CUSTOMERS,
        months=MONTHS,
        seed=SEED,
        out=settings.data_dir,
        catalog=load_catalog(CATALOG),
        end_month=END_MONTH,
    )
    return SimulatedTables(root, settings, simulation)


@pytest.fixture(scope="session")
def simulated_world(simulated_tables: SimulatedTables) -> SimulatedWorld:
    """The shared world after ``offers retrain``: features, Feast store and champion models."""
    from pipelines.retrain import run_retrain

    result = run_retrain(settings=simulated_tables.settings, show_progress=False)
    return SimulatedWorld(
        root=simulated_tables.root,
        settings=simulated_tables.settings,
        simulation=simulated_tables.simulation,
        retrain=result,
    )
