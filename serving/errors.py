"""The serving node's errors, and the one table that maps them to gRPC status codes."""

from __future__ import annotations

from typing import Any

import grpc

from fedstore.federation.grpc_handlers import status_details


class ServingError(Exception):
    """Root of every error a serving call can end with. Subclasses fix the status code."""

    code = grpc.StatusCode.INTERNAL


class InvalidRequest(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownFeature(ServingError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(ServingError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServingError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NoData(ServingError):
    """Neither the online store nor a batch snapshot can answer."""

    code = grpc.StatusCode.UNAVAILABLE


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


def abort(context: grpc.ServicerContext, error: ServingError) -> None:
    context.abort(error.code, status_details(str(error)))


class NoModel(ServingError):
    """No model takes traffic for the feature service in this region (none deployed, or refused here)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(ServingError):
    """Refused before any answer, so the caller retries elsewhere (the prediction log is behind)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
