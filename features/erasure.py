"""Erasing one customer's values from the online store (GDPR Art. 17)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from core.columns import CUSTOMER_KEY
from features.materialize import entity_keys, sqlite_path

if TYPE_CHECKING:
    from feast import FeatureStore


def erase_online_values(store: FeatureStore, customer_id: str) -> int:
    """Delete every value the online store holds for the customer, in every customer view;
    returns how many feature values were removed."""
    from feast.infra.online_stores.helpers import compute_table_id

    key = entity_keys(CUSTOMER_KEY, [customer_id])[0]
    views = [
        view
        for view in store.list_feature_views()
        if view.entity_columns and view.entity_columns[0].name == CUSTOMER_KEY
    ]
    kind = store.config.online_store.type
    if kind == "sqlite":
        connection = sqlite3.connect(sqlite_path(store), timeout=60.0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            removed = 0
            for view in views:
                table = compute_table_id(store.project, view, False).replace('"', '""')
                removed += connection.execute(
                    f'DELETE FROM "{table}" WHERE entity_key = ?', (key,)
                ).rowcount
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()
        return removed
    if kind == "redis":
        # Every view of an entity lives in one hash under the entity key and the project.
        online: Any = store._get_provider().online_store
        client = online._get_client(store.config.online_store)
        name = key + store.project.encode()
        values = sum(1 for field in client.hkeys(name) if not field.startswith(b"_ts:"))
        client.delete(name)
        return values
    raise ValueError(f"erasing from a {kind} online store is not supported (SQLite and Redis are)")
