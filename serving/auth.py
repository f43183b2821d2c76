"""Who may call this region's node: tokens and roles from the federation config, checked on every call.

A caller sends ``authorization: Bearer <token>`` metadata. A missing or unknown token is
UNAUTHENTICATED; a known caller whose roles do not admit the method here is PERMISSION_DENIED
(``federation.roles`` is the one table: lookups need role ``lookup`` and training sets role
``datasets``, each from a credential bound to exactly this region, so nothing issued for the
centre reads a row). Health checks and reflection stay open (they are not behind the guard) so
load balancers and ``grpcurl list`` work without a token. Admitted calls are counted per caller and
refusals per code and caller, so who reads a region's data, and who tried to, is on its metrics;
lookups and scores also per caller and the purpose they were admitted for (``fedstore_calls_by_purpose``).

The lookup lane asks ``refusal`` before it reads a call's message; for the services on grpc's own
server the check is made where grpc looks up a call's handler (a generic handler wrapping them).
Decisions are made once per caller and method at start-up (``federation.access``).
"""

from __future__ import annotations

from typing import Sequence

import grpc

from fedstore.federation.access import AccessGuard, Admitted, Refusal
from fedstore.federation.tokens import TokenBook
from fedstore.serving.metrics import ServingMetrics


class TokenGuard(AccessGuard):
    """The guarded services' handlers, for callers the roles table admits in this region; a refusal else."""

    def __init__(
        self, services: Sequence[grpc.GenericRpcHandler], book: TokenBook, region: str, metrics: ServingMetrics
    ) -> None:
        super().__init__(services, book, region, metrics)
        self.metrics = metrics

    def admit(self, metadata: tuple[tuple[str, str | bytes], ...] | None, method: str) -> Refusal | Admitted:
        got = super().admit(metadata, method)
        if isinstance(got, Admitted) and got.purpose is not None:  # the audit trail: who used rows for what
            self.metrics.purpose_used(got.caller, got.purpose.value)
        return got


__all__ = ["Admitted", "Refusal", "TokenBook", "TokenGuard"]
