"""The aggregator's errors, each with its gRPC status code. A message names the rule broken."""

from __future__ import annotations

import grpc


class AggregatorError(Exception):
    code = grpc.StatusCode.INTERNAL


class Rejected(AggregatorError):
    """The submission breaks a rule of the contract (a number, a name, a shape)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotAllowed(AggregatorError):
    code = grpc.StatusCode.PERMISSION_DENIED


class OverBudget(AggregatorError):
    """By the centre's own count, accepting it would exceed the region's budget for the period."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(AggregatorError):
    """An unknown model or version."""

    code = grpc.StatusCode.NOT_FOUND


class NotEnoughStatistics(AggregatorError):
    """There is nothing (or not enough) accepted to train from."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PolicyRefused(AggregatorError):
    """The target region's deployment policy (or the stage order) forbids the change."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class StoreInUse(AggregatorError):
    """Another process has the submission store open (DuckDB allows one writer process)."""

    code = grpc.StatusCode.UNAVAILABLE


class NotHeld(AggregatorError):
    """Only a submission quarantine holds can be accepted or rejected."""

    code = grpc.StatusCode.FAILED_PRECONDITION
