"""The serving node's errors: kinds of refusal (``federation.errors``) the node's error boundary sends
(``federation.error_boundary``, the lookup lane's ``serving.lookup_methods``), and the online store's
failures the node falls back from."""

from __future__ import annotations

from typing import Any

from fedstore.federation import errors as kinds


class ServingError(kinds.FedstoreError):
    """Root of every error a serving call can end with (a bare one: INTERNAL). Subclasses fix the kind."""


class InvalidRequest(ServingError, kinds.InvalidArgument):
    pass


class UnknownFeature(ServingError, kinds.NotFound):
    pass


class NoData(ServingError, kinds.Unavailable):
    """Neither the online store nor a batch snapshot can answer."""


class OnlineStoreDown(Exception):
    """The online store failed or was too slow; the caller falls back to the snapshot."""


class OnlineStoreTimeout(OnlineStoreDown):
    """The online store did not answer within the deadline the read was given (said by the
    deadline's own timer, so no caller has to infer it from clocks of coarser resolution)."""


class OnlineNotLoaded(Exception):
    """The online store answered, but its marker says it no longer holds these views' rows as the
    last materialisation left them (emptied, flushed, or restored from an older backup)."""

    def __init__(self, views: frozenset[str], rows: dict[str, Any]) -> None:
        super().__init__(f"the online store does not hold the loaded rows of {', '.join(sorted(views))}")
        self.views = views
        self.rows = rows  # what it answered: still the best answer when there is no snapshot


class NoModel(ServingError, kinds.FailedPrecondition):
    """No model takes traffic for the feature service in this region (none deployed, or refused here)."""


class Overloaded(ServingError, kinds.ResourceExhausted):
    """Refused before any answer, so the caller retries elsewhere (the prediction log is behind)."""
