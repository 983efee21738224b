"""Every Feast object of the repository in one list, built for the store chosen by ``Settings``.

The definition modules (entities, data_sources, feature_views, on_demand, feature_services) hold the
objects with the default layout, as ``feast`` run inside ``features/`` sees them. Here the feature
views get sources over ``Settings.features_dir`` and, with ``OFFERS_OFFLINE_STORE=spark``,
SparkSources over the same Parquet files.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from feast import FeatureView
from feast.data_source import DataSource

from features.data_sources import feature_table_source
from features.entities import customer, offer
from features.feature_services import FEATURE_SERVICES
from features.feature_views import FEATURE_VIEWS
from features.on_demand import plan_fit_odfv
from features.settings import Settings


def feature_sources(settings: Settings) -> dict[str, DataSource]:
    """The source of every feature view, by view name, under ``settings.features_dir``."""
    features_dir = Path(settings.features_dir).resolve()
    return {
        view.name: feature_table_source(view.name, features_dir, settings.offline_store)
        for view in FEATURE_VIEWS
    }


def feature_views(settings: Settings) -> list[FeatureView]:
    """The feature views, reading from the sources of :func:`feature_sources`."""
    sources = feature_sources(settings)
    views = []
    for view in FEATURE_VIEWS:
        placed = copy.copy(view)
        placed.batch_source = sources[view.name]
        views.append(placed)
    return views


def repository_objects(settings: Settings) -> list[Any]:
    """Entities, sources, feature views, the plan-fit view and the feature services."""
    views = feature_views(settings)
    return [
        customer,
        offer,
        *(view.batch_source for view in views),
        *views,
        plan_fit_odfv,
        *FEATURE_SERVICES,
    ]
