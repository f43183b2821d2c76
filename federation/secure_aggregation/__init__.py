"""Secure aggregation of training releases (Bonawitz et al. 2017, "Practical Secure Aggregation
for Privacy-Preserving Machine Learning"), the contract both sides of the border compute with.

The centre learns only the sum of the surviving regions' integer vectors; each vector carries its
region's share of the Gaussian noise, so the noise is added once for the sum (docs/privacy.md,
"Secure aggregation"). Every primitive comes from a well-kept library:

    keys.py ......... X25519 key agreement, HKDF-SHA256 (``cryptography``)
    masks.py ........ masks expanded from the agreed seeds with ChaCha20 (``cryptography``)
    sharing.py ...... Shamir t-of-n sharing of 32-byte secrets, as two 16-byte halves
                      (pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir``, as Flower's SecAgg+)
                      and the shares sealed region→region with AES-GCM under a pairwise key
    encoding.py ..... fixed-point encoding of a float vector into Z_{2^64}, its scale and overflow bound
    rounds.py ....... the messages of the four rounds (value objects)
    participant.py .. a region's side: keys, shares, masked input, unmasking answers
    unmasking.py .... the centre's side: routes, checks, removes masks, decodes the sum

Nothing here knows a region or the centre: both import it (the layering of docs/architecture.md).
"""

from fedstore.federation.secure_aggregation.encoding import FixedPoint
from fedstore.federation.secure_aggregation.participant import Participant
from fedstore.federation.secure_aggregation.rounds import (
    AdvertisedKeys,
    MaskedInput,
    ProtocolError,
    RoundParameters,
    SealedShare,
    UnmaskingAnswer,
)
from fedstore.federation.secure_aggregation.unmasking import RoundState

__all__ = ["AdvertisedKeys", "FixedPoint", "MaskedInput", "Participant", "ProtocolError", "RoundParameters",
           "RoundState", "SealedShare", "UnmaskingAnswer"]
