"""One entity's entries in the region's online store, in Feast's layout: counted or deleted.

Redis (and a Redis Cluster): one hash per entity key and project, ``serialize_entity_key`` +
project, holding every view's fields, through Feast's own client for the store. SQLite: the
entity's rows in each view's Feast table (``<project>_<view>``, keyed by the serialised entity key).
Used by erasure (``regions/consent/erasure.py``) and after a write the region does not control
(Feast's Spark engine reads the sources itself), to take erased entities out again.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from fedstore.regions.store.erasure_list import ErasedKeys


def remove_online(store: FeatureStore, data_dir: Path, join_key: str, value: object, views: list[FeatureView]) -> int:
    """Delete the entity's online entries; how many there were (Redis keys, or SQLite rows)."""
    config = store.config
    key = _serialized(store, join_key, value)
    if isinstance(config.online_store, SqliteOnlineStoreConfig):
        with closing(_sqlite(store, data_dir)) as db, db:
            return sum(db.execute(f"DELETE FROM {_quote(t)} WHERE entity_key = ?", (key,)).rowcount
                       for t in _tables(store, db, views))
    client = RedisOnlineStore()._get_client(config.online_store)
    return int(client.delete(key + config.project.encode()))


def online_entries(store: FeatureStore, data_dir: Path, join_key: str, value: object, views: list[FeatureView]) -> int:
    """How many online entries the entity has (Redis keys, or SQLite rows)."""
    config = store.config
    key = _serialized(store, join_key, value)
    if isinstance(config.online_store, SqliteOnlineStoreConfig):
        with closing(_sqlite(store, data_dir)) as db:
            return sum(int(db.execute(f"SELECT count(*) FROM {_quote(t)} WHERE entity_key = ?", (key,)).fetchone()[0])
                       for t in _tables(store, db, views))
    client = RedisOnlineStore()._get_client(config.online_store)
    return int(client.exists(key + config.project.encode()))


def remove_erased_online(store: FeatureStore, data_dir: Path, erased: ErasedKeys, view: FeatureView) -> int:
    """Delete every erased entity of the view's join keys from the online store again."""
    keys = {e.name for e in view.entity_columns}
    return sum(remove_online(store, data_dir, k, v, [view]) for k, values in erased.by_key.items() if k in keys
               for v in values)


def _serialized(store: FeatureStore, join_key: str, value: object) -> bytes:
    proto = ValueProto(int64_val=value) if isinstance(value, int) else ValueProto(string_val=str(value))
    return serialize_entity_key(EntityKeyProto(join_keys=[join_key], entity_values=[proto]),
                                entity_key_serialization_version=store.config.entity_key_serialization_version)


def _sqlite(store: FeatureStore, data_dir: Path) -> sqlite3.Connection:
    path = Path(store.config.online_store.path)
    return sqlite3.connect(path if path.is_absolute() else data_dir / path, timeout=30)


def _tables(store: FeatureStore, db: sqlite3.Connection, views: list[FeatureView]) -> list[str]:
    config = store.config
    versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [t for fv in views if (t := compute_table_id(config.project, fv, versioning)) in have]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
