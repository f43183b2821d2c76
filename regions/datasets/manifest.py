"""The manifest beside every training set: the lineage auditors and the registry follow."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedstore.regions.errors import RegionError, StorageError


@dataclass(frozen=True)
class DatasetManifest:
    dataset_id: str
    region: str
    jurisdiction: str
    law: str
    feature_service: str
    features: list[str]
    label: str | None
    schema: list[tuple[str, str]]
    schema_hash: str
    entity_file: dict[str, Any]  # path, sha256, bytes, rows
    sources: list[dict[str, Any]]  # fingerprints of every source read
    rows: int
    nulls: dict[str, int]
    time_range: tuple[str, str] | None
    created_at: str
    duration_s: float
    tool_version: str
    output: str
    extra: dict[str, Any] = field(default_factory=dict)
    # the consent basis: purpose, policy, the records' fingerprint, mode, rows excluded or marked
    consent: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DatasetManifest":
        raw = json.loads(text)
        raw["schema"] = [tuple(x) for x in raw["schema"]]
        raw["time_range"] = tuple(raw["time_range"]) if raw["time_range"] else None
        return cls(**raw)


def manifest_path(output: Path) -> Path:
    return output.with_name(output.stem + ".manifest.json")


def index_path(data_dir: Path) -> Path:
    return data_dir / "datasets" / "index.jsonl"


def require_index(data_dir: Path, region: str) -> None:
    """The region's index can take a record: checked before a build, so no dataset is written that
    the index (and `fedstore region datasets`) would then miss."""
    index = index_path(data_dir)
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        with index.open("a", encoding="utf-8"):
            pass
    except OSError as e:
        raise StorageError(f"region {region}: cannot record training sets in {index} ({e.strerror}): the region's "
                           "data directory must be writable by this user") from None


def record(data_dir: Path, manifest: DatasetManifest, path: Path) -> None:
    """Append the dataset to the region's index (what `fedstore region datasets` lists)."""
    index = index_path(data_dir)
    index.parent.mkdir(parents=True, exist_ok=True)
    with index.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"dataset_id": manifest.dataset_id, "manifest": str(path)}) + "\n")


@dataclass(frozen=True)
class Listed:
    """One dataset of the region's index, as its manifest says now."""

    dataset_id: str  # as recorded when it was built
    manifest_path: Path
    manifest: DatasetManifest | None  # None: the manifest has gone or is unreadable

    @property
    def replaced_by(self) -> str | None:
        """The dataset written over this one at the same path since, if any."""
        m = self.manifest
        return m.dataset_id if m is not None and m.dataset_id != self.dataset_id else None


def list_manifests(data_dir: Path) -> list[Listed]:
    """Every dataset built in the region, newest first."""
    index = index_path(data_dir)
    if not index.exists():
        return []
    out = []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            path, dataset_id = Path(raw["manifest"]), str(raw["dataset_id"])
        except (ValueError, KeyError, TypeError):
            raise RegionError(f"{index}, line {n}: not a dataset record; remove or repair that line") from None
        out.append(Listed(dataset_id, path, read_manifest(path)))
    return list(reversed(out))


def read_manifest(path: Path) -> DatasetManifest | None:
    """The manifest beside a dataset, or None: it lives with the user's files and may be gone or edited."""
    try:
        return DatasetManifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
