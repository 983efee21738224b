"""The Feast store as ``Settings`` configure it, and the commands that apply and materialize it.

Embedded by default: a file registry and a SQLite online store under ``settings.feast_dir``, Parquet
files as the offline store. ``OFFERS_ONLINE_STORE=redis://…`` selects Redis,
``OFFERS_REGISTRY_URL=postgresql://…`` a SQL registry and ``OFFERS_OFFLINE_STORE=spark`` Spark.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.database import redis_connection_string, sqlalchemy_url
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

    from features.materialize import MaterializeReport

logger = logging.getLogger(__name__)

PROJECT = "invoice_offers"
# Registry state is cached in memory and refreshed at most this often, never checked per request.
REGISTRY_CACHE_TTL_SECONDS = 60
REPO_PATH = Path(__file__).resolve().parent / "repo"
SQLITE_PAGE_SIZE = 16_384


def repo_config(settings: Settings, project: str = PROJECT) -> RepoConfig:
    """Feast's configuration for ``settings``: online, offline and registry stores."""
    from feast import RepoConfig
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig

    feast_dir = Path(settings.feast_dir).resolve()
    registry: RegistryConfig
    if settings.registry_url:
        from feast.infra.registry.sql import SqlRegistryConfig

        registry = SqlRegistryConfig(
            registry_type="sql",
            path=sqlalchemy_url(settings.registry_url),
            cache_ttl_seconds=REGISTRY_CACHE_TTL_SECONDS,
            cache_mode="thread",
            sqlalchemy_config_kwargs={"echo": False, "pool_pre_ping": True},
        )
    else:
        registry = RegistryConfig(
            registry_type="file",
            path=str(feast_dir / "registry.db"),
            cache_ttl_seconds=REGISTRY_CACHE_TTL_SECONDS,
            cache_mode="thread",
        )
    online: SqliteOnlineStoreConfig | RedisOnlineStoreConfig
    if settings.online_store == "sqlite":
        online = SqliteOnlineStoreConfig(type="sqlite", path=str(feast_dir / "online.db"))
    else:
        online = RedisOnlineStoreConfig(
            type="redis", connection_string=redis_connection_string(settings.online_store)
        )
    if settings.offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
            SparkOfflineStoreConfig,
        )

        offline: object = SparkOfflineStoreConfig(
            type="spark",
            spark_conf={
                "spark.master": settings.spark_master,
                "spark.sql.session.timeZone": "UTC",
                "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
            },
        )
    else:
        offline = DaskOfflineStoreConfig(type="file")
    return RepoConfig(
        project=project,
        provider="local",
        registry=registry,
        online_store=online,
        offline_store=offline,
        entity_key_serialization_version=3,
        repo_path=REPO_PATH,
    )


def open_store(settings: Settings | None = None, project: str = PROJECT) -> FeatureStore:
    """A FeatureStore over ``settings`` (read from the environment when not given)."""
    from feast import FeatureStore

    settings = settings or get_settings()
    if not settings.registry_url or settings.online_store == "sqlite":
        Path(settings.feast_dir).mkdir(parents=True, exist_ok=True)
    if settings.online_store == "sqlite":
        _create_sqlite(Path(settings.feast_dir).resolve() / "online.db")
    return FeatureStore(repo_path=str(REPO_PATH), config=repo_config(settings, project))


def _create_sqlite(path: Path) -> None:
    """Create the SQLite online store with 16 KiB pages before Feast adds its tables.

    Bulk loads run about a fifth faster than with SQLite's default 4 KiB pages.
    """
    if path.exists():
        return
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        connection.execute("VACUUM")  # writes the header, which fixes the page size
    finally:
        connection.close()


def _views_changed(registered: Sequence[Any], objects: Sequence[Any]) -> list[str]:
    """The names of registered feature views whose features or revision (values computed
    otherwise under the same names) the objects to apply change."""
    from feast import FeatureView

    from features.views import REVISION_TAG

    def shape(view: Any) -> tuple[frozenset[str], str]:
        features = frozenset(field.name for field in view.features)
        return features, view.tags.get(REVISION_TAG, "1")

    before = {view.name: shape(view) for view in registered}
    return sorted(
        obj.name
        for obj in objects
        if isinstance(obj, FeatureView) and obj.name in before and before[obj.name] != shape(obj)
    )


def apply_repository(settings: Settings | None = None, project: str = PROJECT) -> list[str]:
    """Register every object of the repository; objects no longer defined are removed.

    Returns the names of the feature views, on-demand views and services now registered.
    """
    from features.repository import repository_objects

    settings = settings or get_settings()
    store = open_store(settings, project)
    objects = repository_objects(settings)
    names = {(type(obj).__name__, obj.name) for obj in objects}
    registered: list[Any] = [
        *store.list_entities(),
        *store.list_data_sources(),
        *store.list_feature_views(),
        *store.list_on_demand_feature_views(),
        *store.list_feature_services(),
    ]
    stale = [obj for obj in registered if (type(obj).__name__, obj.name) not in names]
    changed = _views_changed(store.list_feature_views(), objects)
    with warnings.catch_warnings():
        # Feast calls every on-demand view experimental; plan_fit is one, on purpose.
        warnings.filterwarnings("ignore", message="On demand feature view is an experimental")
        store.apply(objects, objects_to_delete=stale, partial=False)
    if store.config.online_store.type == "sqlite":
        from features.materialize import compact_table

        # Feast has just created any new view table in its own layout; empty, it is made
        # compact at no cost, before anything writes to it.
        for view in store.list_feature_views():
            if view.online:
                compact_table(store, view)
    if changed:
        # The online store's rows of these views lack the new features (or hold dropped ones, or
        # values computed otherwise), and an incremental materialize would load only rows dated
        # after its last end.
        from features.materialize import request_whole_reload

        request_whole_reload(
            settings,
            f"feature views applied with other features or values: {', '.join(changed)}",
        )
    applied = sorted(
        name
        for kind, name in names
        if kind in {"FeatureView", "OnDemandFeatureView", "FeatureService"}
    )
    logger.info(
        "applied %d objects to project %s (%s); removed %d",
        len(objects),
        project,
        ", ".join(applied),
        len(stale),
    )
    return applied


def materialize(
    end: dt.datetime | None = None,
    settings: Settings | None = None,
    *,
    views: list[str] | None = None,
    project: str = PROJECT,
    engine: Literal["bulk", "feast"] = "bulk",
    show_progress: bool = True,
    whole: bool = False,
) -> MaterializeReport:
    """Load the newest feature values up to ``end`` (default now, UTC) into the online store.

    Incremental like Feast: each view continues from its last materialized end time, kept in the
    registry; from the beginning with ``whole``, or once after a whole reload was requested
    (``features.materialize.request_whole_reload``). ``engine="bulk"`` (the default) writes the
    newest row per entity straight into the online store's own layout; ``engine="feast"`` runs
    Feast's ``materialize`` for comparison.
    """
    from features.materialize import materialize_views

    settings = settings or get_settings()
    store = open_store(settings, project)
    return materialize_views(
        store,
        settings,
        end=end,
        views=views,
        engine=engine,
        show_progress=show_progress,
        whole=whole,
    )
