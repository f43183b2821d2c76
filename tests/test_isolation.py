"""Region isolation is physical: each region's store names only its own files and its own Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from handmade import write_sources
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode

pytestmark = pytest.mark.redis


def test_regions_share_nothing(redis_federation, clean_redis):
    nodes = {code: RegionNode(redis_federation.region(code)) for code in ("MY", "SG")}
    offsets = {"MY": 1_000_000_000, "SG": 2_000_000_000}
    for code, node in nodes.items():
        write_sources(node.data_dir, customers=30, drivers=3, id_offset=offsets[code])
        node.apply()
        materialize(node, MaterializeRequest(show_progress=False))

    for code, node in nodes.items():
        other = "SG" if code == "MY" else "MY"
        # the registry's sources all live inside this region's directory
        for fv in node.store.list_feature_views():
            assert Path(fv.batch_source.path).is_relative_to(node.data_dir)
        assert node.store.project == f"fedstore_{code.lower()}"
        # its Feast config names its own Redis and nothing of the other region
        rendered = (node.data_dir / "feature_store.yaml").read_text()
        assert f":{clean_redis[code].port}," in rendered
        assert str(clean_redis[other].port) not in rendered
        assert str(nodes[other].data_dir) not in rendered
        # its Redis holds only its own project's keys
        keys = list(clean_redis[code].client().scan_iter())
        assert keys and all(k.endswith(f"fedstore_{code.lower()}".encode()) for k in keys)
        # an entity of the other region is simply unknown here
        foreign = offsets[other] + 1
        got = node.store.get_online_features(
            features=["customer_transactions:spend_30d"], entity_rows=[{"customer_id": foreign}]
        ).to_dict()
        assert got["spend_30d"] == [None]
        # nothing of the other region's state was written into this directory
        assert not any(other.lower() in p.name for p in node.data_dir.rglob("*") if p.is_file()
                       and p.parent.name != "lineage")
