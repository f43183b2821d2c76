"""The aggregator's errors: each a kind of refusal (``federation.errors``), most naming the rule broken.

The centre's error boundary (``federation.error_boundary``) turns them into gRPC statuses."""

from __future__ import annotations

from fedstore.federation import errors as kinds


class AggregatorError(kinds.FedstoreError):
    """Root of the centre's errors (a bare one: INTERNAL)."""


class Rejected(AggregatorError, kinds.InvalidArgument):
    """The submission breaks a rule of the contract (a number, a name, a shape)."""


class NotAllowed(AggregatorError, kinds.PermissionDenied):
    pass


class OverBudget(AggregatorError, kinds.FailedPrecondition):
    """By the centre's own count, accepting it would exceed the region's budget for the period."""


class NotFound(AggregatorError, kinds.NotFound):
    """An unknown model or version."""


class NotEnoughStatistics(AggregatorError, kinds.FailedPrecondition):
    """There is nothing (or not enough) accepted to train from."""


class PolicyRefused(AggregatorError, kinds.FailedPrecondition):
    """The target region's deployment policy (or the stage order) forbids the change."""


class StoreInUse(AggregatorError, kinds.Unavailable):
    """Another process has the submission store open (DuckDB allows one writer process)."""


class NotHeld(AggregatorError, kinds.FailedPrecondition):
    """Only a submission quarantine holds can be accepted or rejected."""
