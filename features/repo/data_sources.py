"""Feast data sources: the Parquet feature tables written by ``offers features build``.

Paths here are relative to this folder and fit the default layout, which is what ``feast`` run
inside ``features/repo/`` sees. ``features.repository`` builds the same sources with the paths
and offline store chosen by ``Settings``.
"""

from __future__ import annotations

from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat
from feast.data_source import DataSource

from core.columns import EVENT_TIMESTAMP
from features.views import OWNER, TEAM, VIEWS, feature_table_path

# The default Settings.features_dir (data/features) seen from this folder.
DEFAULT_FEATURES_DIR = Path("..") / ".." / "data" / "features"


def feature_table_source(
    view: str, features_dir: Path = DEFAULT_FEATURES_DIR, offline_store: str = "file"
) -> DataSource:
    """The source of one feature view: a FileSource, or a SparkSource over the same Parquet."""
    common = {
        "name": f"{view}_source",
        "timestamp_field": EVENT_TIMESTAMP,
        "description": VIEWS[view].source_description,
        "owner": OWNER,
        "tags": {"team": TEAM, "built_by": "offers features build"},
    }
    path = str(feature_table_path(view, features_dir))
    if offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(path=path, file_format="parquet", **common)  # type: ignore[arg-type]
    return FileSource(path=path, file_format=ParquetFormat(), **common)  # type: ignore[arg-type]


customer_usage_source = feature_table_source("customer_usage")
customer_contract_source = feature_table_source("customer_contract")
customer_billing_source = feature_table_source("customer_billing")
customer_profile_source = feature_table_source("customer_profile")
customer_consent_source = feature_table_source("customer_consent")
offer_attributes_source = feature_table_source("offer_attributes")
