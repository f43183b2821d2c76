"""Labelled examples for training statistics: one per entity, point-in-time correct. Stays here.

The privacy unit is one entity, so each entity contributes exactly one example: its latest label
in the window, joined through Feast's ``get_historical_features`` with the features as they were
at that label's time (no leakage from the future, TTL honoured). Features are clipped to the
catalog's bounds and rescaled to [0, 1] (``fedstore.federation.training.rescale``). With a consent
gate, an entity without consent for its purpose at the window's end gives no example.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from fedstore.federation.training import LABELS, TrainingSpec, rescale
from fedstore.regions.consent import ConsentGate
from fedstore.regions.datasets.builder import plan, unreadable_sources
from fedstore.regions.errors import RegionError
from fedstore.regions.store.definitions import batch_source
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.source_reader import read_latest


@dataclass(frozen=True)
class LabelledExamples:
    features: tuple[str, ...]
    x: np.ndarray  # n × d, rescaled to [0, 1]
    y: np.ndarray  # n labels in LABELS
    consent_excluded: int = 0  # entities with a label left out for want of consent

    @property
    def rows(self) -> int:
        return int(self.y.size)


def labelled_examples(
    node: RegionNode, spec: TrainingSpec, start: datetime, end: datetime, consent: ConsentGate | None = None
) -> LabelledExamples:
    p = plan(node, spec.feature_service, spec.label)
    missing = [f for f in spec.features if f not in p.refs]
    if missing:
        raise RegionError(f"feature service {spec.feature_service} in region {node.code} lacks {missing[0]}")
    label_view = p.views[-1]  # plan() appends the label's view last
    node.require_sources(p.views)
    batches = list(read_latest(label_view, start, end, config=node.store.config, offline_store=None, batch_rows=1 << 20))
    join_keys = [e.name for e in label_view.entity_columns]
    excluded = 0
    if batches and consent is not None:
        table, excluded = consent.keep(pa.Table.from_batches(batches), join_keys, end)
        batches = table.to_batches()
    labels = pa.Table.from_batches(batches).to_pandas() if batches else pd.DataFrame()
    if labels.empty:
        withheld = f" ({excluded} left out for want of consent)" if excluded else ""
        raise RegionError(
            f"region {node.code} has no {spec.label} labels between {start:%Y-%m-%d} and {end:%Y-%m-%d}{withheld}"
        )
    ts = batch_source(label_view).timestamp_field
    entity_df = labels[join_keys + [ts]].rename(columns={ts: "event_timestamp"})
    try:
        joined = node.store.get_historical_features(entity_df=entity_df, features=list(spec.features)).to_df()
    except duckdb.Error as e:  # the footers were checked; a damaged page shows only now
        raise unreadable_sources(node, p.views, e, "nothing was released, no ε spent") from None
    y = labels.set_index(join_keys)[spec.label].reindex(joined.set_index(join_keys).index).to_numpy()
    if not np.isin(y, LABELS).all():
        raise RegionError(f"label {spec.label} in region {node.code} holds values other than {LABELS}")
    names = [f.split(":", 1)[1] for f in spec.features]
    raw = joined[names].to_numpy(dtype=float, na_value=np.nan)
    return LabelledExamples(spec.features, rescale(raw, spec.specs()), y.astype(np.int64), excluded)
