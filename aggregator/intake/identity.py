"""The centre binds a submission's region to the client certificate it came over, not only to a token.

A token can leak or be shared; the certificate's private key stays in its region. A submission for
region X is accepted only over a mutual-TLS connection whose verified client certificate names X
(URI SAN ``spiffe://fedstore/region/X``, see ``federation.identity``). Checked before anything is
looked up, so a connection of another region learns nothing of X's submissions.
"""

from __future__ import annotations

import grpc

from fedstore.aggregator.errors import NotAllowed
from fedstore.federation.identity import certificate_regions


def certificate_names(context: grpc.ServicerContext) -> list[str]:
    """The subject alternative names of the peer's verified client certificate ([] without one)."""
    return [v.decode("utf-8", "replace") for v in context.auth_context().get("x509_subject_alternative_name", [])]


def check_certificate_region(context: grpc.ServicerContext, region: str) -> None:
    """Refuses (PERMISSION_DENIED, rule identity) a submission for ``region`` over any other certificate."""
    names = certificate_names(context)
    if not names:
        raise NotAllowed(f"a submission for region {region!r} needs region {region}'s client "
                         "certificate, and this connection presents none", rule="identity")
    claimed = certificate_regions(names)
    if len(claimed) != 1:
        raise NotAllowed(f"a submission for region {region!r} needs a client certificate naming "
                         f"exactly one region; this one names {', '.join(claimed) or 'none'}", rule="identity")
    if claimed[0] != region:
        raise NotAllowed(f"this connection's client certificate is region {claimed[0]}'s; a "
                         f"submission for region {region!r} must come over that region's own certificate", rule="identity")
