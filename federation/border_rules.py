"""The shapes of the contract's strings that are not catalog names, read by both sides of the border:
the region checks what it sends against them (``regions/publishing/egress.py``), the centre what it
receives (``aggregator/intake/validation.py``). Each is matched whole (``fullmatch``): ``$`` would
also match before a final newline, and "2026-11\\n" would be a month of its own.

A random UUID4 (32 hex digits or the canonical form, lower case, version 4, RFC variant) is the only
thing an id may hold beside its region and kind: 122 random bits and nothing chosen (no time, no
counter, no free character a region could fill with anything else).
"""

from __future__ import annotations

import re

UUID4 = (r"(?:[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}"
         r"|[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})")
# <region>-<stats|train|eval>-<random UUID4>; the group is the kind, naming what the release carries
SUBMISSION_ID = re.compile(rf"[a-z]{{2}}-(stats|train|eval)-{UUID4}")
ID_KINDS = {"stats": "features", "train": "training", "eval": "evaluation"}
# a consent snapshot's id: a random UUID4's 32 hex digits (federation.consent.ConsentBasis)
SNAPSHOT_ID = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")  # ASCII digits only: \d would match a full-width or Thai 2026
# The largest request the centre reads (rule size), and so the largest a region sends. An honest
# submission is a few kilobytes (every list in it is bounded by the catalog: features, bins, segments,
# classes); grpc's own limit, 4 MiB, refuses larger ones before they are read (RESOURCE_EXHAUSTED).
MAX_REQUEST_BYTES = 256 * 1024
