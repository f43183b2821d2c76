"""The Python client takes Feast's call shape as well as its own, over a real serving node:
code written against ``FeatureStore.get_online_features(features=..., entity_rows=...)`` moves over
unchanged. Before, a Feast-style call raised TypeError, ``features="fraud_scoring"`` was split into
characters and numpy int64 ids were refused."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pytest

from fedstore.feature_repo.definitions import fraud_scoring
from fedstore.serving.client import AsyncFeatureClient, FeatureClient
from serving_fixtures import TOKENS, served_region


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    s = served_region(tmp_path_factory.mktemp("shapes"), None, mp, customers=20)
    yield s
    s.server.stop(1)
    mp.undo()


def test_feast_shapes_answer_what_the_native_shape_answers(node):
    refs = [f"{p.name}:{f.name}" for p in fraud_scoring.feature_view_projections for f in p.features]
    with FeatureClient(node.address, token=TOKENS["fraud-app"]) as client:
        native = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [3, 4, 5]})
        assert native.source == "online_store" and any(v is not None for v in native.values[native.feature_names[0]])
        shapes = [
            client.get_online_features(features=fraud_scoring, entity_rows=[{"customer_id": 3}, {"customer_id": 4},
                                                                             {"customer_id": 5}]),
            client.get_online_features(features=refs, entity_rows=[{"customer_id": np.int64(i)} for i in (3, 4, 5)]),
            client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": np.arange(3, 6)}),
        ]
    for other in shapes:
        assert other.to_dict() == native.to_dict()
        assert other.to_dict()["customer_id"] == [3, 4, 5] and all(type(i) is int for i in other.to_dict()["customer_id"])
    table = native.to_arrow()
    assert isinstance(table, pa.Table) and table.column_names == ["customer_id", *native.feature_names]
    assert table.to_pydict() == native.to_dict() == native.to_df().replace({np.nan: None}).to_dict("list")


def test_the_async_client_takes_the_same_shapes(node):
    async def lookup():
        async with AsyncFeatureClient(node.address, token=TOKENS["fraud-app"]) as client:
            return await client.get_online_features(features=fraud_scoring, entity_rows=[{"customer_id": np.int32(7)}])

    answer = asyncio.run(lookup())
    assert answer.to_dict()["customer_id"] == [7] and answer.region == "MY"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"features": "fraud_scoring", "entities": {"customer_id": [1]}}, "feature_service='fraud_scoring'"),
    ({"feature_service": "fraud_scoring"}, "exactly one of entities"),
    ({"feature_service": "fraud_scoring", "entities": {"customer_id": [1]}, "entity_rows": [{"customer_id": 1}]},
     "exactly one of entities"),
    ({"feature_service": "fraud_scoring", "entity_rows": [{"customer_id": 1}, {"driver_id": 2}]}, "same keys"),
    ({"feature_service": "fraud_scoring", "entity_rows": []}, "non-empty list"),
    ({"feature_service": "fraud_scoring", "entities": {"customer_id": [True]}}, "not an integer or a string"),
    ({"feature_service": "fraud_scoring", "entities": {"customer_id": [1.5]}}, "not an integer or a string"),
    ({"feature_service": "fraud_scoring", "entities": {"customer_id": [1, "a"]}}, "all int or all str"),
])
def test_a_wrong_call_is_a_value_error_before_anything_is_sent(kwargs, fragment):
    # an address nothing listens on: the error must come before any call is made
    with FeatureClient("127.0.0.1:9", token="t", timeout=0.5, retries=0) as client:
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
            client.get_online_features(**kwargs)
