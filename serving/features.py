"""The serving node's one job: features of some entities, from the online store or the snapshot.

    request ─▶ resolve (cached catalog) ─▶ validate entities
            ─▶ does Redis still hold the views? (its marker: read by the refresher, and by each
               Redis lookup in its own round trip, a half-open probe's too; then the snapshot at once)
                 │ yes                                             └─no: lost or older rows ──────────┐
                 ▼                                                                                    │
               breaker closed? ─▶ online store (deadline) ──ok──▶ answer (source: online store)     │
                 │                     └─error/timeout─▶ breaker.failure ─┐                           │
                 └─open───────────────────────────────────────────────────┴───────────────────────────┴▶ batch snapshot
                                                                                  (source: fallback, with age)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Generator, Mapping, Sequence, TypeVar

from fedstore.federation.consent import Purpose
from fedstore.serving.breaker import PROBE, CircuitBreaker
from fedstore.serving.catalog import CatalogCache, Resolved
from fedstore.serving.consent import ConsentCheck
from fedstore.serving.entities import Entities, validate
from fedstore.serving.errors import InvalidRequest, NoData, OnlineNotLoaded, OnlineStoreDown, OnlineStoreTimeout
from fedstore.serving.fallback import SnapshotCache
from fedstore.serving.metrics import BREAKER_OPEN, CALLER_DEADLINE, NOT_LOADED, ONLINE_ERROR, ServingMetrics
from fedstore.serving.online import OnlineReader, PendingRead, ViewRows
from fedstore.serving.use_audit import CALL, CallOf, Use, UseAudit

log = logging.getLogger(__name__)

ONLINE, FALLBACK = "online_store", "batch_fallback"

# Of a caller's remaining deadline, what is kept back for answering from the snapshot (an
# in-memory read, the encoding, the send, a busy loop) when the online store does not answer in
# time: a tenth, at least 2 ms, at most half (a caller with a very short deadline still gets the
# online store's answer).
FALLBACK_RESERVE_SHARE, FALLBACK_RESERVE_MIN_SECONDS = 0.1, 0.002



T = TypeVar("T")
# a lookup that may pause for its online read: yields a PendingRead, is sent its replies, returns T
Steps = Generator[PendingRead, list[object], T]


def run(steps: "Steps[T]") -> T:
    """Steps that make their own reads (not ``pipelined``): run to the end, nothing is yielded."""
    try:
        pending = next(steps)
    except StopIteration as done:
        return done.value
    steps.close()
    raise RuntimeError(f"a lookup paused for a pipelined read nobody makes: {pending!r}")


@dataclass(slots=True)  # not frozen: built for every lookup, and frozen __init__ costs five times more
class Answer:
    resolved: Resolved
    entities: Entities
    rows: dict[str, ViewRows]
    source: str
    snapshot_age_seconds: float | None
    job_ids: tuple[str, ...]
    now: float  # unix seconds the answer was judged at (max age)
    withheld: tuple[int, ...] = ()  # rows without consent for the call's purpose: blanked (serving.consent)

    def names(self, full: bool) -> list[str]:
        return [r.output_name(full) for r in self.resolved.refs]


def _blanked(rows: ViewRows, withheld: tuple[int, ...]) -> ViewRows:
    """``rows`` without the values and timestamps of the ``withheld`` rows (copied: never mutated)."""
    values, ts_raw, timestamps = list(rows.values), list(rows.ts_raw), list(rows.timestamps)
    for i in withheld:
        values[i] = ts_raw[i] = timestamps[i] = None
    return replace(rows, values=values, ts_raw=ts_raw, timestamps=timestamps)


class OnlineFeatures:
    def __init__(
        self,
        *,
        region: str,
        catalog: CatalogCache,
        reader: OnlineReader,
        snapshots: SnapshotCache,
        breaker: CircuitBreaker,
        max_entities: int,
        metrics: ServingMetrics,
        online_timeout_seconds: float | None = None,
    ) -> None:
        self.region = region
        self.catalog = catalog
        self.reader = reader
        self.snapshots = snapshots
        self.breaker = breaker
        self.max_entities = max_entities
        self.metrics = metrics
        self.online_timeout = online_timeout_seconds  # the reader's own deadline; None: it has none
        # when the oldest read that timed out since the store last answered began (monotonic): a
        # blackholed store is caught even when every caller's deadline is far shorter than its own.
        # Set and cleared by several lookup threads without a lock: a race only moves it by one read.
        self._unanswered_since: float | None = None
        # views whose rows the online store no longer holds as the ledger's last load left them
        # (set by the serving node's refresher from the online marker); replaced, never mutated
        self.not_loaded: frozenset[str] = frozenset()
        # for a reader that cannot check the marker in the lookup's own round trip (a cluster's):
        # the node's marker check, run by the half-open probe before its answer is taken as online
        # and the breaker closes (an empty restart after an outage must not be answered online)
        self.check_loaded: Callable[[], None] | None = None
        # per view, the job of the ledger's last load (set by the refresher; replaced, never
        # mutated): names the online rows newer than the snapshot when the reader cannot say
        self.latest_loads: dict[str, str] = {}
        # the entities without consent per purpose (None: the region's law makes no lookup depend on it)
        self.consent: ConsentCheck | None = None
        # the region's audit trail of data use (serving.use_audit): one record per call (None: none kept)
        self.audit: UseAudit | None = None

    def resolve(self, *, feature_service: str | None, refs: Sequence[str], full_feature_names: bool = False) -> Resolved:
        cat = self.catalog.current
        resolved = cat.service(feature_service) if feature_service else cat.refs(tuple(refs))
        collision = resolved.collision(full_feature_names)
        if collision:  # an answer with two columns of one name could be read wrongly (Feast refuses it too)
            raise InvalidRequest(f"feature names collide: {collision}", reason="FEATURE_NAMES_COLLIDE")
        return resolved

    def get(
        self, resolved: Resolved, columns: Mapping[str, Sequence[object]], *, time_left: float | None = None,
        purpose: Purpose = Purpose.SERVING, audited: bool = True,
    ) -> Answer:
        """The features of ``columns``' entities for ``purpose``: an entity without consent for it
        (``serving.consent``) is in the answer's ``withheld`` rows, its values and timestamps blanked.
        With an audit trail, the call is recorded before it answers (``serving.use_audit``); with
        ``audited`` False, only a call that ends in an error here is, and the caller records the
        answer itself once it knows what its caller gets (``record``: Score, after its log)."""
        return run(self.get_steps(resolved, columns, time_left=time_left, purpose=purpose, audited=audited))

    def get_steps(
        self, resolved: Resolved, columns: Mapping[str, Sequence[object]], *, time_left: float | None = None,
        purpose: Purpose = Purpose.SERVING, pipelined: bool = False, call: CallOf | None = None,
        audited: bool = True,
    ) -> Steps[Answer]:
        """``get`` as steps: with ``pipelined`` (a single Redis: ``RedisReader``), the online read
        is not made here but yielded (``PendingRead``) for the caller to send, with other lookups'
        reads, on its event loop; the replies are sent back in (or its failure, ``OnlineStoreDown``,
        thrown in), and the rest runs as ``get`` runs it. Without, nothing is yielded.
        ``call`` names the call for the audit record where ``CALL`` cannot (steps resumed on an
        event loop that interleaves many calls); None: ``CALL`` of this thread."""
        audit = self.audit
        call = call or CALL.get()
        try:
            answer = yield from self._get_steps(resolved, columns, time_left=time_left, pipelined=pipelined)
        except Exception as e:
            if audit is not None:
                count = len(next(iter(columns.values()), ())) if columns else 0
                self._record(audit, resolved, purpose, count, 0, type(e).__name__, None, call)
            raise
        consent = self.consent
        if consent is not None and consent.requires(purpose):
            withheld = consent.withheld(purpose, answer.entities, resolved.join_keys)
            if withheld:
                self.metrics.consent_withheld(purpose.value, len(withheld))
                answer.rows = {view: _blanked(rows, withheld) for view, rows in answer.rows.items()}
                answer.withheld = withheld
        if audited:
            self.record(resolved, purpose, answer, call=call)
        return answer

    def record(self, resolved: Resolved, purpose: Purpose, answer: Answer, outcome: str | None = None, *,
               call: CallOf | None = None) -> None:
        """The audit record of a call that read ``answer``: ``outcome`` None is ``answered`` (or
        ``withheld`` when consent kept some back); ``call`` None, ``CALL`` of this thread. Raises
        ``Overloaded`` when the trail refuses it (the call must not answer)."""
        audit = self.audit
        if audit is None:
            return
        n = len(answer.withheld)
        self._record(audit, resolved, purpose, answer.entities.count, n,
                     outcome or ("withheld" if n else "answered"), answer.entities, call or CALL.get())

    def _record(self, audit: UseAudit, resolved: Resolved, purpose: Purpose, entities: int, withheld: int,
                outcome: str, named: Entities | None, call: CallOf | None) -> None:
        ids = None
        if audit.entity_ids and named is not None:
            ids = tuple(",".join(map(str, key)) for key in named.keys(resolved.join_keys))
        audit.record(Use(time.time(), call.caller if call else "", call.method if call else "", purpose.value,
                         resolved.service or ",".join(v.name for v in resolved.views), entities, withheld, outcome,
                         ids))

    def _get_steps(
        self, resolved: Resolved, columns: Mapping[str, Sequence[object]], *, time_left: float | None = None,
        pipelined: bool = False,
    ) -> Steps[Answer]:
        """Runs on one of the serving node's lookup threads, which the online read blocks (or, with
        ``pipelined``, on an event loop that makes the read for it: ``get_steps``).

        ``time_left`` is the caller's remaining deadline (seconds; None: no deadline). When it is
        shorter than the online store's own deadline, the online read gets what is left of it
        minus a reserve, so a slow store still leaves time to answer from the snapshot instead of
        the caller timing out. Such a timeout counts towards opening the breaker only when the
        store had at least half its own deadline (then it is evidence the store is down or far
        too slow, as when its host stops answering), or when the store has answered no read for a
        whole store deadline (it is silent, whatever the callers' deadlines); one caller's very
        short deadline alone is not.
        """
        entities = validate(columns, resolved, limit=self.max_entities)
        now = time.time()
        timeout, caller_bound = self.online_timeout, False
        if time_left is not None:
            reserve = max(time_left * FALLBACK_RESERVE_SHARE, FALLBACK_RESERVE_MIN_SECONDS)
            budget = time_left - min(reserve, time_left / 2)
            if timeout is None or budget < timeout:
                timeout, caller_bound = budget, True
        if timeout is not None and timeout <= 0:
            reason = CALLER_DEADLINE  # no time left at all: the snapshot is the only answer in time
        elif self.not_loaded and self._needs_snapshot(resolved):
            reason = NOT_LOADED
        elif not (grant := self.breaker.allow()):
            reason = BREAKER_OPEN
        else:
            began = time.monotonic()
            try:
                if pipelined:
                    read = self.reader.prepare(resolved, entities)  # type: ignore[attr-defined]
                    rows = read.finish((yield PendingRead(read.payload, read.count, timeout if caller_bound else None)))
                else:
                    rows = self.reader.read(resolved, entities, timeout=timeout if caller_bound else None)
            except OnlineStoreDown as e:
                if self._unanswered_since is None:
                    self._unanswered_since = began
                # the caller's budget ran out (its own timer said so), not a store that failed sooner
                ran_out = caller_bound and isinstance(e, OnlineStoreTimeout)
                too_short = self.online_timeout is None or timeout < self.online_timeout / 2  # type: ignore[operator]
                if ran_out and too_short and not self._silent_for_a_deadline():
                    self.breaker.release(grant)  # the caller's deadline ran out, not the store's
                    reason = CALLER_DEADLINE
                else:
                    if self.breaker.failure(grant):  # once per outage, not per call
                        log.warning(
                            "region %s: the online store is failing (%s); answering from the batch snapshot, "
                            "trying it again every %.1f s", self.region, e, self.breaker.reset_seconds,
                        )
                    self.metrics.online_error()
                    reason = ONLINE_ERROR
            except OnlineNotLoaded as e:
                # it answered, but its marker no longer vouches for these views' rows: answered from
                # the snapshot at once, and every later call too until the refresher sees them loaded
                self._answered()
                self.not_loaded = self.not_loaded | e.views  # a race between threads loses one view, asked again
                if self.snapshots.has(resolved.views):
                    reason = NOT_LOADED
                else:
                    return Answer(resolved, entities, e.rows, ONLINE, None, self._jobs(resolved, entities, e.rows), now)
            except BaseException:
                # failed before Redis was asked (or interrupted): no verdict on the store. Released,
                # or a half-open breaker would wait for this probe's outcome forever and every later
                # call would be answered from the snapshot.
                self.breaker.release(grant)
                raise
            else:
                if grant == PROBE and self.check_loaded is not None and not getattr(self.reader, "verifies_marker", True):
                    try:
                        self.check_loaded()  # before the breaker closes: the store may be back empty
                    except Exception as e:  # noqa: BLE001 -- unverified: not answered online, the next probe asks again
                        log.warning("region %s: the online marker could not be checked (%s)", self.region, e)
                        self.breaker.release(grant)
                        return self._fallback(resolved, entities, now, NOT_LOADED)
                    if self.not_loaded and self._needs_snapshot(resolved):
                        self._answered()
                        return self._fallback(resolved, entities, now, NOT_LOADED)
                self._answered()
                return Answer(resolved, entities, rows, ONLINE, None, self._jobs(resolved, entities, rows), now)
        return self._fallback(resolved, entities, now, reason)

    def _answered(self) -> None:
        """The store answered: the breaker closes (logged once, when it was open)."""
        self._unanswered_since = None
        if self.breaker.success():
            log.info("region %s: the online store answers again; back on the online path", self.region)

    def _needs_snapshot(self, resolved: Resolved) -> bool:
        """Does the request read a view the online store lost (and the snapshot holds)? Without a
        snapshot the online store's answer, however empty, is still the best there is."""
        lost = self.not_loaded
        return any(v.name in lost for v in resolved.views) and self.snapshots.has(resolved.views)

    def _silent_for_a_deadline(self) -> bool:
        """Has the store answered nothing since a read that began a whole store deadline ago?"""
        since, limit = self._unanswered_since, self.online_timeout
        return since is not None and limit is not None and time.monotonic() - since >= limit

    def _fallback(self, resolved: Resolved, entities: Entities, now: float, reason: str) -> Answer:
        if not self.snapshots.has(resolved.views):
            missing = [v.name for v in resolved.views if not self.snapshots.has((v,))]
            raise NoData(
                f"region {self.region}: the online store is unavailable and there is no batch snapshot "
                f"for {', '.join(missing)} yet",
                reason="NO_DATA",
            )
        rows, jobs = self.snapshots.read(resolved, entities)
        age = self.snapshots.age_seconds(resolved.views, datetime.now(timezone.utc))
        self.metrics.fallback_answer(reason)
        return Answer(resolved, entities, rows, FALLBACK, age, tuple(sorted(jobs)), now)

    def _jobs(self, resolved: Resolved, entities: Entities, rows: dict[str, ViewRows]) -> tuple[str, ...]:
        """The jobs whose values an online answer carries.

        Read by the snapshot's per-row job ids where the snapshot holds the same row. The snapshot
        is reloaded a tick after a job, so while a job writes, and until its snapshot loads, the
        online store may hold rows it does not: then each row is compared with the snapshot's
        bytes too, and a row that differs is the newer job's. A single Redis says which job that is
        in the lookup's own round trip (the marker's running note, else the view's last load);
        other stores by the refresher's reading of the ledger (``latest_loads``), so a row written
        since the node last read it is named by no job rather than by a wrong one.
        """
        jobs: set[str] = set()
        for v in resolved.views:
            got = rows[v.name]
            exact, newer = self.attribution(v.name, got)
            jobs |= self.snapshots.jobs_for(v.name, entities.keys(v.join_keys), got, exact=exact, newer=newer)
        return tuple(sorted(jobs))

    def attribution(self, view: str, got: ViewRows) -> tuple[bool, str | None]:
        """How a view's online rows are attributed to jobs (``SnapshotCache.job_per_row``): whether
        to compare bytes, and the job newer than the loaded snapshot's, where one is known."""
        loaded = self.snapshots.job_of(view)
        if got.marked:
            newer = got.writing or (got.loaded_by if got.loaded_by != loaded else None)
            return newer is not None, newer
        latest = self.latest_loads.get(view)
        return True, (latest if latest != loaded else None)
