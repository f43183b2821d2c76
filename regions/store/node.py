"""One region's Feast node: its own project, registry, DuckDB offline store and online store.

Everything lives under the region's data directory; the FeatureStore is built from the federation
config, so no path, registry or online store of another region is reachable from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView

from fedstore import feature_repo
from fedstore.feature_repo.sources import SOURCE_DIR
from fedstore.federation import RegionConfig
from fedstore.regions.errors import InvalidSource, RegionNotReady
from fedstore.regions.store.data_contract import mismatches, null_placements, out_of_bounds
from fedstore.regions.store.definitions import region_objects
from fedstore.regions.store.feast_config import REGISTRY_FILE, repo_config, write_feature_store_yaml
from fedstore.regions.store.fingerprint import FingerprintCache
from fedstore.regions.store.ledger import JobLedger
from fedstore.regions.store.lineage import LineageEmitter
from fedstore.regions.store.source_files import is_glob, missing_source_hint, source_files


@dataclass(frozen=True)
class ApplyResult:
    region: str
    project: str
    feature_store_yaml: Path
    entities: tuple[str, ...]
    feature_views: tuple[str, ...]
    feature_services: tuple[str, ...]


class RegionNode:
    def __init__(self, region: RegionConfig) -> None:
        self.region = region

    @property
    def code(self) -> str:
        return self.region.code

    @property
    def data_dir(self) -> Path:
        return self.region.data_dir

    @property
    def sources_dir(self) -> Path:
        return self.data_dir / SOURCE_DIR

    @cached_property
    def store(self) -> FeatureStore:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return FeatureStore(repo_path=str(self.data_dir), config=repo_config(self.region))

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.db"

    @cached_property
    def ledger(self) -> JobLedger:
        return JobLedger(self.ledger_path, self.code)

    @cached_property
    def lineage(self) -> LineageEmitter:
        return LineageEmitter(self.data_dir, self.code)

    @cached_property
    def fingerprints(self) -> FingerprintCache:
        return FingerprintCache(self.data_dir / "fingerprints.db", self.code)

    def apply(self) -> ApplyResult:
        """Register the shared definitions in this region's registry and set up its online store."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        yaml_path = write_feature_store_yaml(self.region)
        objects = region_objects(self.data_dir)
        self.store.apply(objects)
        return ApplyResult(
            region=self.code,
            project=self.region.project,
            feature_store_yaml=yaml_path,
            entities=tuple(e.name for e in feature_repo.ALL_OBJECTS[:2]),
            feature_views=tuple(v.name for v in feature_repo.ALL_VIEWS),
            feature_services=tuple(s.name for s in feature_repo.FEATURE_SERVICES),
        )

    @property
    def is_applied(self) -> bool:
        return (self.data_dir / REGISTRY_FILE).exists()

    def feature_views(self, names: list[str] | None = None, *, online_only: bool = True) -> list[FeatureView]:
        """Feature views as registered in this region (not as defined in code).

        By default only the views served online: offline-only views (labels) are never materialised.
        """
        if not self.is_applied:
            raise RegionNotReady(
                f"region {self.code} has no registry yet: run `fedstore region apply --region {self.code}` first"
            )
        registered = {fv.name: fv for fv in self.store.list_feature_views() if fv.online or not online_only}
        if not names:
            return sorted(registered.values(), key=lambda fv: fv.name)
        unknown = [n for n in names if n not in registered]
        if unknown:
            raise RegionNotReady(
                f"unknown feature view {unknown[0]!r} in region {self.code}; "
                f"registered: {', '.join(sorted(registered))}"
            )
        return [registered[n] for n in names]

    def source_path(self, fv: FeatureView) -> Path:
        path = Path(fv.batch_source.path)  # type: ignore[union-attr]
        return path if path.is_absolute() else self.data_dir / path

    def require_sources(self, views: list[FeatureView], *, check_columns: bool = True) -> list[Path]:
        """Each view's source path (a file or a glob), once it names at least one file."""
        paths = [self.source_path(fv) for fv in views]
        for path in paths:
            if source_files(path):
                continue
            if path.is_dir():
                raise InvalidSource(f"region {self.code}: source {missing_source_hint(path)}")
            matches = " (no file matches it)" if is_glob(path) else ""
            raise RegionNotReady(
                f"region {self.code} has no source data at {path}{matches}: run "
                f"`fedstore region generate --region {self.code}` first"
            )
        if check_columns:
            self.check_sources(views)
        return paths

    def check_sources(self, views: list[FeatureView], *, quarantine: bool = False) -> None:
        """Each view's source is Parquet with every column the view reads, each of the type the view
        declares, no null join key or event time, and no value outside the domain the statistics
        catalog declares for it (the data contract, ``data_contract.py``);
        footers only: cheap. With ``quarantine`` the columns are checked only: the rows that break
        the contract are set aside by the read (``quarantine.py``)."""
        for fv in views:
            source = fv.batch_source
            assert source is not None
            renamed = {feature: column for column, feature in (source.field_mapping or {}).items()}
            wanted = [source.timestamp_field, source.created_timestamp_column,
                      *(e.name for e in fv.entity_columns), *(f.name for f in fv.features)]
            for path in source_files(self.source_path(fv)):  # every part of a partitioned source
                try:
                    schema = pq.read_schema(path)
                    names = set(schema.names)
                except (pa.ArrowInvalid, OSError) as e:
                    raise InvalidSource(f"region {self.code}: source {path} is not readable Parquet: {e}") from None
                lacking = [renamed.get(c, c) for c in dict.fromkeys(wanted) if c and renamed.get(c, c) not in names]
                if lacking:
                    raise InvalidSource(
                        f"region {self.code}: source {path} lacks column{'s' if len(lacking) > 1 else ''} "
                        f"{', '.join(lacking)}, which feature view {fv.name} reads"
                    )
                if quarantine:
                    continue
                broken = mismatches(fv, path, schema)
                if broken:
                    raise InvalidSource(f"region {self.code}: {broken[0].describe()}"
                                        f"{f' (and {len(broken) - 1} more column(s))' if len(broken) > 1 else ''}; "
                                        "nothing was read from it: fix the source, or the view's schema")
                unplaced = null_placements(fv, path)
                if unplaced:
                    raise InvalidSource(f"region {self.code}: {unplaced[0].describe()}"
                                        f"{f' (and {len(unplaced) - 1} more column(s))' if len(unplaced) > 1 else ''}; "
                                        "nothing was read from it: fix the source, or materialise with --quarantine "
                                        "to set such rows aside")
                outside = out_of_bounds(fv, path, schema)
                if outside:
                    raise InvalidSource(f"region {self.code}: {outside[0].describe()}"
                                        f"{f' (and {len(outside) - 1} more column(s))' if len(outside) > 1 else ''}; "
                                        "nothing was read from it: fix the source, or materialise with --quarantine "
                                        "to set such rows aside")
