"""Which served views the online store still holds: its marker against the region's ledger.

A Redis restarted without persistence, flushed, or restored from an earlier backup answers "not
found" or older values without any error. The serving node's refresher asks this every tick; the
views it names are answered from the batch snapshot until a materialisation loads them again
(``online/online_marker.py`` has the marker's layout and rules).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from fedstore.regions.store.ledger import JobLedger
from fedstore.online import BEHIND, LOST, Load, OnlineMarker, PRESENT, RespError

log = logging.getLogger("fedstore.serving.server")  # the node's own log: operators read one place

# a view's state while the node cannot check its marker: the ledger's loads were never read
UNCHECKED = "unchecked"

_WHY = {
    LOST: "no longer holds their rows: Redis restarted without persistence, or was flushed",
    BEHIND: "holds older rows than the last materialisation: restored from an earlier backup?",
}


@dataclass(frozen=True)
class Change:
    not_loaded: dict[str, str]  # view -> lost | behind, now
    lost: tuple[str, ...]  # views that were held at the last check and are not now
    back: tuple[str, ...]  # views that were not held and are again


class LoadedViews:
    def __init__(self, region: str, marker: OnlineMarker, ledger: JobLedger) -> None:
        self.region = region
        self.marker = marker
        self.ledger = ledger

    def close(self) -> None:
        self.marker.close()

    def expected(self, served: Iterable[str]) -> dict[str, Load]:
        """The ledger's last load of each served view (what the marker must name)."""
        loads = self.ledger.online_loads()
        return {v: loads[v] for v in served if v in loads}

    def check(self, served: Iterable[str], before: Iterable[str],
              wanted: dict[str, Load] | None = None) -> Change | None:
        """The served views the store does not hold as the ledger's last loads left them, and what
        changed since ``before`` (logged: one line when it is noticed, one when it is over). None
        when the store cannot be asked now (the breaker and the next check see to it). ``wanted``:
        ``expected(served)`` when the caller read it already."""
        if wanted is None:
            wanted = self.expected(served)
        states: dict[str, str] = {}
        if wanted:
            try:
                found = self.marker.read()
            except RespError:
                return None
            states = self.ledger.online_states(wanted, found)
        not_loaded = {v: state for v, state in states.items() if state != PRESENT}
        previous = set(before)
        change = Change(not_loaded, tuple(sorted(set(not_loaded) - previous)),
                        tuple(sorted(previous - set(not_loaded))))
        for state in (LOST, BEHIND):
            views = [v for v in change.lost if not_loaded[v] == state]
            if views:
                log.warning("region %s: the online store %s (%s); answering them from the batch snapshot until a "
                            "materialisation loads them again", self.region, _WHY[state], ", ".join(views))
        if change.back:
            log.info("region %s: the online store holds %s again; back on the online path",
                     self.region, ", ".join(change.back))
        return change
