"""What personal data looks like in text: the screen both sides of the border run on every string a
person typed and the wire carries (a reason on the registry's trail, a readiness item, a model name).

The wire has no field for a row, a key or free text; these few strings are the exception, and a
careless (or malicious) operator could paste an identifier into them. ``identifier_in`` names the
first identifier it finds, by category, never by value:

- an e-mail address; an IPv4 or IPv6 address;
- a national identity number with its letters: Singapore's NRIC/FIN (S1234567D) and Hong Kong's
  HKID (A123456(7));
- any run of ``DIGIT_RUN`` or more digits, counting digits joined by the separators people write
  them with (space, hyphen, dot, slash, brackets, plus): phone numbers, card numbers and the digit-only
  national ids (MyKad 12, NIK 16, the Thai ID 13, CCCD 12, PhilSys 12 or 16);
- an encoded blob: a run of 16 or more letters and digits (hex, base64) with both in it.

Before matching, text is made plain the ways an identifier is disguised: compatibility forms
(full-width digits, mathematical digits, superscripts) folded by NFKC; every script's decimal digits
(Thai ๘, Arabic-Indic ٨, …) read as 0-9; format characters (zero-width spaces and joiners, direction
marks and overrides) dropped. A calendar date (2026-11-15, 20261115) and a submission id (random,
the contract's own) are not identifiers. What this cannot see: a name, an address in words, a number
spelt out, letters standing for digits (O for 0) — no field of the contract is meant to hold them,
which is why the free text it has is short (``aggregator/registry/text.py``).
"""

from __future__ import annotations

import re
import unicodedata

from fedstore.federation.border_rules import UUID4

DIGIT_RUN = 7  # Singapore's NRIC has 7 digits, a local phone number 7 or 8: fewer is a count or a version
ENCODED_RUN = 16

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?=[0-9a-f:]*\d)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", re.IGNORECASE)
_NRIC = re.compile(r"(?<![a-z0-9])[stfgm]\s?\d{7}\s?[a-z](?![a-z0-9])", re.IGNORECASE)
_HKID = re.compile(r"(?<![a-z0-9])[a-z]{1,2}\s?\d{6}\s?\(?[0-9a]\)?(?![a-z0-9])", re.IGNORECASE)
_SEPARATOR = r"[\s\-./()+]"
_DIGITS = re.compile(rf"\d(?:{_SEPARATOR}?\d)+")
# a date is a time, not a person: 2026-11-15 or 20261115 (a model named for its day), unless more
# digits are glued to it (1988-01-01-14-5566)
_DATE = re.compile(rf"(?<![\d])(?<!\d{_SEPARATOR})(?:19|20)\d\d(-?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])"
                   rf"(?!{_SEPARATOR}?\d)")
_SUBMISSION_ID = re.compile(rf"(?<![\w-])[a-z]{{2}}-(?:stats|train|eval)-{UUID4}(?![\w-])")
_BLOB = re.compile(rf"[A-Za-z0-9+/=]{{{ENCODED_RUN},}}")


def plain(text: str) -> str:
    """``text`` with its disguises taken off (see the module): NFKC, every decimal digit as 0-9, no
    format characters."""
    folded = unicodedata.normalize("NFKC", text)
    out = []
    for ch in folded:
        if unicodedata.category(ch) == "Cf":
            continue
        digit = unicodedata.decimal(ch, None)
        out.append(str(digit) if digit is not None else ch)
    return "".join(out)


def identifier_in(text: str) -> str:
    """What kind of identifier ``text`` holds (the first found, named by category, never quoted), or ""."""
    t = plain(text)
    t = _SUBMISSION_ID.sub(" ", t)
    for pattern, what in ((_EMAIL, "an e-mail address"), (_IPV4, "an IP address"), (_IPV6, "an IP address"),
                          (_NRIC, "an NRIC/FIN number"), (_HKID, "an HKID number")):
        if pattern.search(t):
            return what
    t = _DATE.sub(" ", t)
    for run in _DIGITS.finditer(t):
        digits = sum(c.isdigit() for c in run.group())
        if digits >= DIGIT_RUN:
            return f"a number of {digits} digits (a phone, card or national id number)"
    for blob in _BLOB.finditer(t):
        word = blob.group()
        if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
            return f"an encoded value of {len(word)} characters (hex or base64)"
    return ""


__all__ = ["DIGIT_RUN", "ENCODED_RUN", "identifier_in", "plain"]
