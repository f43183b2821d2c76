"""The shared Feast definitions, bound to one region's data directory.

``feature_repo`` names sources by relative path. Feast's DuckDB offline store reads a relative
path against the process's working directory rather than the repo path, so each region registers
copies whose sources are absolute paths inside its own directory: the region's registry then names
only its own files, whatever directory an operator runs `feast` or `fedstore` from.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from feast import FeatureView, FileSource
from feast.data_source import DataSource

from fedstore import feature_repo
def batch_source(fv: FeatureView) -> DataSource:
    """A view's batch source: Feast allows views without one (fed by other views), ours all read one."""
    if fv.batch_source is None:
        raise ValueError(f"feature view {fv.name} has no batch source")
    return fv.batch_source


def bind_source(source: FileSource, data_dir: Path) -> FileSource:
    path = Path(source.path)
    if path.is_absolute():
        raise ValueError(f"source {source.name} must use a path relative to the region directory, not {path}")
    return FileSource(
        name=source.name,
        path=str((data_dir / path).resolve()),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=dict(source.field_mapping),
        description=source.description,
        tags=dict(source.tags),
        owner=source.owner,
    )


def region_objects(data_dir: Path) -> list[Any]:
    """Entities, views (sources bound to ``data_dir``) and services, ready for ``store.apply``."""
    objects: list[Any] = []
    for obj in feature_repo.ALL_OBJECTS:
        if isinstance(obj, FeatureView):
            view = copy.deepcopy(obj)
            source = bind_source(obj.batch_source, data_dir)  # type: ignore[arg-type]
            view.batch_source = source
            view.source = source
            objects.append(view)
        else:
            objects.append(obj)
    return objects
