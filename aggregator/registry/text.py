"""Limits on the only free text the centre keeps: an operator's reason for a change (``why``, on
the audit trail) and model names. Without them a refused promotion stored a 3 MB ``why``: text a
caller chooses is a channel to whoever reads the trail, so it is short, one line, and printable.

- rule free_text: at most ``MAX_WHY`` characters, printable (letters, digits, punctuation,
  symbols and the ASCII space of any script; no control, format or line-separating characters);
- rule personal_data: no identifier in it, however disguised (an e-mail, an IP address, a phone,
  card or national id number, an encoded blob: ``federation.personal_data``), in a reason, a
  readiness item or a model name: the region's border refuses it first, the centre again;
- rule model_name: a registry name, ``[a-z][a-z0-9_]{0,62}``;
- a stage is one of the federation's stages (the store's own check, with the value shown short).

What a refused change puts on the trail keeps the same limits: a name or stage that broke its rule
is replaced by ``WITHHELD`` (``storable``), and so is the refusal's message when it could quote one
(``storable_reason``), so nothing a caller typed reaches the trail unchecked.
"""

from __future__ import annotations

import re

from fedstore.aggregator.errors import Rejected
from fedstore.federation.border_rules import MODEL_NAME
from fedstore.federation.personal_data import identifier_in
from fedstore.federation.traffic import STAGES

MAX_WHY = 280
NAME = MODEL_NAME  # matched whole: "$" would let a final newline through
_STAGE_LIKE = re.compile(r"[a-z0-9_]{0,20}")
# what the trail holds in place of a why that broke the rule (the refusal itself is on the trail)
WITHHELD = "(withheld: broke rule free_text or personal_data)"


def why_refusal(text: str) -> Rejected | None:
    """Why ``text`` may not be stored as a reason (rule free_text or personal_data), or None."""
    if len(text) > MAX_WHY:
        return Rejected(f"why is {len(text):,} characters; at most {MAX_WHY}", rule="free_text")
    if not text.isprintable():
        return Rejected("why must be one line of printable characters (no control or invisible characters)",
                        rule="free_text")
    return personal_data_refusal(text, "why")


def personal_data_refusal(text: str, field: str) -> Rejected | None:
    """Rule personal_data: ``field`` holds an identifier (named by kind, never quoted back), or None."""
    found = identifier_in(text)
    if not found:
        return None
    return Rejected(f"{field} holds what looks like {found}; personal data never crosses the border "
                    "(name a ticket or a runbook instead)", rule="personal_data")


def check_why(text: str) -> None:
    refusal = why_refusal(text)
    if refusal is not None:
        raise refusal


def storable_why(text: str) -> str:
    """``text`` when it keeps the rule, else a fixed note: a refused change is still on the trail."""
    return WITHHELD if why_refusal(text) is not None else text


def storable_name(name: str) -> str:
    return name if name == "" or (NAME.fullmatch(name) and not identifier_in(name)) else WITHHELD


def storable_stage(stage: str) -> str:
    """A stage, or a mistaken one that still looks like a name (short, lower case): kept on the trail
    so the mistake can be read there; anything else is withheld."""
    return stage if stage in STAGES or _STAGE_LIKE.fullmatch(stage) else WITHHELD


def _short(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise Rejected(f"unknown stage {_short(stage)}; stages are {', '.join(STAGES)}", rule="stage")


def storable_reason(reason: str, *, name: str = "", stage: str = "", why: str = "") -> str:
    """A refusal's message as the trail keeps it. A message may quote what the caller typed (a name or
    stage that is not one); when any of that broke its rule, only the rule the message names is kept
    (an error message is text the caller chose too)."""
    if storable_name(name) != WITHHELD and storable_stage(stage) != WITHHELD and storable_why(why) != WITHHELD:
        return reason
    rule = reason.split(":", 1)[0] if reason.startswith("rule ") else "refused"
    return f"{rule}: {WITHHELD}"


def check_model_name(name: str, *, optional: bool = False) -> None:
    if optional and name == "":
        return
    if not NAME.fullmatch(name):
        raise Rejected(f"{_short(name)} is not a model name: a lower-case letter, then up to 62 "
                       "lower-case letters, digits and _", rule="model_name")
    refusal = personal_data_refusal(name, "the model name")
    if refusal is not None:
        raise refusal
