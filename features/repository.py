"""Every Feast object of the repository in one list, built for the store chosen by ``Settings``.

``features/repo/`` is a Feast repository and nothing else: the definition modules (entities,
data_sources, feature_views, on_demand, feature_services) and ``feature_store.yaml``. ``feast``
imports each file there as a top-level module and the files import each other that way, so this
module loads them the same way (the folder on ``sys.path``): one copy of each object, whether
``feast apply`` or ``offers features apply`` reads them. Here the feature views get sources over
``Settings.features_dir`` and, with ``OFFERS_OFFLINE_STORE=spark``, SparkSources over the same
Parquet files.
"""

from __future__ import annotations

import copy
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from core.settings import Settings

REPO_PATH = Path(__file__).resolve().parent / "repo"
DEFINITION_MODULES = ("entities", "data_sources", "feature_views", "on_demand", "feature_services")


@dataclass(frozen=True)
class Definitions:
    """The repository's Feast objects as defined in ``features/repo/`` (default paths)."""

    entities: tuple[Any, ...]
    feature_views: tuple[Any, ...]
    on_demand_feature_views: tuple[Any, ...]
    feature_services: tuple[Any, ...]


def _module(name: str) -> ModuleType:
    if str(REPO_PATH) not in sys.path:
        sys.path.append(str(REPO_PATH))
    module = importlib.import_module(name)
    origin = Path(module.__file__ or "").resolve()
    if origin.parent != REPO_PATH:
        raise ImportError(f"module {name!r} was found at {origin}, not in {REPO_PATH}")
    return module


def definitions() -> Definitions:
    """The Feast objects of ``features/repo/``, imported as ``feast apply`` imports them."""
    entities = _module("entities")
    views = _module("feature_views")
    on_demand = _module("on_demand")
    services = _module("feature_services")
    return Definitions(
        entities=(entities.customer, entities.offer),
        feature_views=tuple(views.FEATURE_VIEWS),
        on_demand_feature_views=(on_demand.plan_fit_odfv,),
        feature_services=tuple(services.FEATURE_SERVICES),
    )


def feature_sources(settings: Settings) -> dict[str, Any]:
    """The source of every feature view, by view name, under ``settings.features_dir``."""
    sources = _module("data_sources")
    features_dir = Path(settings.features_dir).resolve()
    return {
        view.name: sources.feature_table_source(view.name, features_dir, settings.offline_store)
        for view in definitions().feature_views
    }


def feature_views(settings: Settings) -> list[Any]:
    """The feature views, reading from the sources of :func:`feature_sources`."""
    sources = feature_sources(settings)
    views = []
    for view in definitions().feature_views:
        placed = copy.copy(view)
        placed.batch_source = sources[view.name]
        views.append(placed)
    return views


def repository_objects(settings: Settings) -> list[Any]:
    """Entities, sources, feature views, the plan-fit view and the feature services."""
    found = definitions()
    views = feature_views(settings)
    return [
        *found.entities,
        *(view.batch_source for view in views),
        *views,
        *found.on_demand_feature_views,
        *found.feature_services,
    ]
