"""The serving node's errors, and the one table that maps them to gRPC status codes."""

from __future__ import annotations

import grpc

from federation.grpc_handlers import status_details


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


def abort(context: grpc.ServicerContext, error: ServingError) -> None:
    context.abort(error.code, status_details(str(error)))
