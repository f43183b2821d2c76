"""The online store's Redis layer: Feast's byte layout, pipelined RESP, cluster routing, the marker.

Its own part because both sides of a region use it: the region's materialisation writes rows
(``FastRedisWriter``, ``ClusterRedisWriter``) and the serving node reads them (``RespConnection``,
``ClusterRouter``), and both must agree on the layout (``redis_layout``: Feast's
``infra/online_stores/redis.py``, entity key serialisation v3) and on the in-band ``OnlineMarker``
that says which loads a Redis holds. It imports neither ``regions`` nor ``serving``; they import
this face, never its modules (import-linter contracts in pyproject.toml).
"""

from fedstore.online import redis_layout, resp
from fedstore.online.cluster import SLOTS, ClusterRouter, ClusterTarget, execute, key_slot, key_slots
from fedstore.online.cluster_writer import ClusterRedisWriter
from fedstore.online.online_marker import BEHIND, LOST, PRESENT, RUNNING_FIELD, Load, OnlineMarker, compare, marker_key
from fedstore.online.redis_layout import decode_timestamp, field_hash, ts_field
from fedstore.online.redis_layout import timestamps as encode_timestamps
from fedstore.online.redis_layout import values as encode_values
from fedstore.online.redis_writer import FastRedisWriter, RedisTarget, ViewLayout
from fedstore.online.resp import Segment, to_bytes
from fedstore.online.resp_connection import RespClosed, RespConnection, RespError, RespTimeout
from fedstore.online.resp_connection import command as resp_command

__all__ = [
    "BEHIND", "LOST", "PRESENT", "RUNNING_FIELD", "SLOTS",
    "ClusterRedisWriter", "ClusterRouter", "ClusterTarget", "FastRedisWriter", "Load", "OnlineMarker",
    "RedisTarget", "RespClosed", "RespConnection", "RespError", "RespTimeout", "Segment", "ViewLayout",
    "compare", "decode_timestamp", "encode_timestamps", "encode_values", "execute", "field_hash", "key_slot", "key_slots", "marker_key", "redis_layout", "resp", "resp_command",
    "to_bytes", "ts_field",
]
