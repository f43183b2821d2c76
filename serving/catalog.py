"""What a region serves: its feature views and services, resolved once from its Feast registry.

Requests are resolved against an immutable ``Catalog``; ``CatalogCache`` swaps in a new one when
the registry file changes (checked by the server's refresher, never per request). Field hashes
for Feast's Redis layout are computed here, once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from feast import FeatureStore
from feast.value_type import ValueType

from fedstore.regions.store.definitions import batch_source
from fedstore.online import field_hash, ts_field
from fedstore.serving.errors import InvalidRequest, UnknownFeature


@dataclass(frozen=True)
class ViewSpec:
    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    features: dict[str, ValueType]
    ttl_seconds: float | None  # None: values never expire
    timestamp_field: str
    field_hashes: dict[str, bytes]
    ts_field: bytes


@dataclass(frozen=True)
class FeatureRef:
    view: str
    feature: str

    def output_name(self, full: bool) -> str:
        return f"{self.view}__{self.feature}" if full else self.feature


@dataclass(frozen=True)
class Resolved:
    refs: tuple[FeatureRef, ...]
    views: tuple[ViewSpec, ...]
    join_keys: tuple[str, ...]  # every join key the request must carry
    join_key_types: dict[str, ValueType] = field(default_factory=dict, compare=False)
    service: str = field(default="", compare=False)  # the feature service it resolves, when asked by name
    # What the read and encode steps derive from this resolution (a Redis read plan, encoded
    # feature names), kept here so a cached resolution carries them and no request rebuilds them.
    # Keyed by the part that derives it; a value is a pure function of the resolution.
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    def features_of(self, view: str) -> tuple[str, ...]:
        """The requested features of ``view``, in request order: the order of its rows' values."""
        key = ("features-of", view)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = tuple(r.feature for r in self.refs if r.view == view)
        return hit  # type: ignore[return-value]

    def collision(self, full: bool) -> str:
        """Why two of the answer's columns would have one name ("" when none would): a ref asked
        twice, or, without full feature names, one feature name in two views."""
        key = "collision-full" if full else "collision-short"
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = _collision(self.refs, full)
        return hit  # type: ignore[return-value]

    def value_positions(self) -> tuple[int, ...]:
        """For each ref, the position of its value in its view's row values."""
        hit = self.memo.get("value-positions")
        if hit is None:
            hit = self.memo["value-positions"] = tuple(self.features_of(r.view).index(r.feature) for r in self.refs)
        return hit  # type: ignore[return-value]


def _collision(refs: tuple[FeatureRef, ...], full: bool) -> str:
    seen: dict[str, FeatureRef] = {}
    for r in refs:
        name = r.output_name(full)
        first = seen.get(name)
        if first is None:
            seen[name] = r
            continue
        if first == r:
            return f"{r.view}:{r.feature} is requested twice"
        return (f"{first.view}:{first.feature} and {r.view}:{r.feature} would both be named {name!r}; "
                "ask with full_feature_names")
    return ""


@dataclass(frozen=True)
class Catalog:
    project: str
    views: dict[str, ViewSpec]
    services: dict[str, tuple[FeatureRef, ...]]
    version: tuple[int, int] = (0, 0)  # registry file (mtime_ns, size) it was built from
    # services the registry holds but that name a view or feature it no longer has: service -> that ref
    unservable: dict[str, str] = field(default_factory=dict)
    # resolutions by requested refs and by service name: a request resolves with one dict lookup
    _cache: dict[tuple[str, ...], Resolved] = field(default_factory=dict, compare=False, repr=False)
    _service_cache: dict[str, Resolved] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_store(cls, store: FeatureStore, version: tuple[int, int] = (0, 0)) -> "Catalog":
        views = {}
        for fv in store.list_feature_views():
            if not fv.online:
                continue  # offline-only views (labels) are never served
            ttl = fv.ttl.total_seconds() if fv.ttl else None
            views[fv.name] = ViewSpec(
                name=fv.name,
                join_keys=tuple(e.name for e in fv.entity_columns),
                join_key_types=tuple(e.dtype.to_value_type() for e in fv.entity_columns),
                features={f.name: f.dtype.to_value_type() for f in fv.features},
                ttl_seconds=ttl or None,
                timestamp_field=batch_source(fv).timestamp_field,
                field_hashes={f.name: field_hash(fv.name, f.name) for f in fv.features},
                ts_field=ts_field(fv.name),
            )
        services, unservable = {}, {}
        for svc in store.list_feature_services():
            refs = tuple(FeatureRef(p.name, f.name) for p in svc.feature_view_projections for f in p.features)
            # a view applied again without a feature leaves the services that name it as they were:
            # serving one would fail on the missing feature (a KeyError, UNKNOWN to the caller)
            gone = next((r for r in refs if r.view not in views or r.feature not in views[r.view].features), None)
            if gone is None:
                services[svc.name] = refs
            else:
                unservable[svc.name] = f"{gone.view}:{gone.feature}"
        return cls(project=store.project, views=views, services=services, version=version, unservable=unservable)

    # (callers refresh the store's registry first: CatalogCache does)

    def service(self, name: str) -> Resolved:
        hit = self._service_cache.get(name)
        if hit is not None:
            return hit
        refs = self.services.get(name)
        if refs is None:
            gone = self.unservable.get(name)
            if gone is not None:
                raise UnknownFeature(f"feature service {name!r} names {gone}, which this region's registry no "
                                     "longer has", reason="UNKNOWN_FEATURE_VIEW")
            known = ", ".join(sorted(self.services)) or "none"
            raise UnknownFeature(f"unknown feature service {name!r}; this region serves {known}",
                                 reason="UNKNOWN_FEATURE_SERVICE")
        # services are few: no bound needed; named, for the audit trail (its memo shared with the refs')
        resolved = self._service_cache[name] = replace(self._resolve(refs), service=name)
        return resolved

    def refs(self, texts: tuple[str, ...]) -> Resolved:
        hit = self._cache.get(texts)  # cached under the same "view:feature" texts it was asked by
        if hit is not None:
            return hit
        if not texts:
            raise InvalidRequest("no features requested: name a feature service or feature refs", reason="NO_FEATURES")
        refs = []
        for text in texts:
            view, sep, feature = text.partition(":")
            if not sep or not view or not feature:
                raise InvalidRequest(f"feature ref {text!r} is not of the form 'view:feature'",
                                     reason="INVALID_FEATURE_REF")
            spec = self.views.get(view)
            if spec is None:
                raise UnknownFeature(f"unknown feature view {view!r} in {text!r}", reason="UNKNOWN_FEATURE_VIEW")
            if feature not in spec.features:
                raise UnknownFeature(f"feature view {view!r} has no feature {feature!r}", reason="UNKNOWN_FEATURE")
            refs.append(FeatureRef(view, feature))
        return self._resolve(tuple(refs))

    def _resolve(self, refs: tuple[FeatureRef, ...]) -> Resolved:
        key = tuple(f"{r.view}:{r.feature}" for r in refs)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        views = tuple(self.views[v] for v in dict.fromkeys(r.view for r in refs))
        join_keys = tuple(dict.fromkeys(k for v in views for k in v.join_keys))
        types = {k: t for v in views for k, t in zip(v.join_keys, v.join_key_types, strict=True)}
        resolved = Resolved(refs=refs, views=views, join_keys=join_keys, join_key_types=types)
        if len(self._cache) < 1024:  # bounded: arbitrary ref lists must not grow memory forever
            self._cache[key] = resolved
        return resolved


class CatalogCache:
    """The current catalog of a region, rebuilt when its registry file changes."""

    def __init__(self, store: FeatureStore, registry_path: Path) -> None:
        self._store = store
        self._path = registry_path
        self._lock = threading.Lock()
        store.refresh_registry()
        self._catalog = Catalog.from_store(store, self._version())

    @property
    def current(self) -> Catalog:
        return self._catalog

    def _version(self) -> tuple[int, int]:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def refresh_if_changed(self) -> bool:
        """Swap in the catalog of a changed registry file, once that file is whole.

        Feast writes ``registry.db`` in place (truncate, then write), so a read may meet an empty
        or half-written file, which parses as a registry with fewer views or none: every lookup
        was NOT_FOUND and every snapshot dropped (its pack deleted) until the next tick. An empty
        file, or one that changed while it was read, is left for the next tick.
        """
        version = self._version()
        if version == self._catalog.version or version[1] == 0:
            return False
        with self._lock:
            self._store.refresh_registry()
            catalog = Catalog.from_store(self._store, version)
            if self._version() != version:
                return False
            self._catalog = catalog
        return True


__all__ = ["Catalog", "CatalogCache", "FeatureRef", "Resolved", "ViewSpec"]
