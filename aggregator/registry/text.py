"""Limits on the only free text the centre keeps: an operator's reason for a change (``why``, on
the audit trail) and model names. Without them a refused promotion stored a 3 MB ``why``: text a
caller chooses is a channel to whoever reads the trail, so it is short, one line, and printable.

- rule free_text: at most ``MAX_WHY`` characters, printable (letters, digits, punctuation,
  symbols and the ASCII space of any script; no control, format or line-separating characters);
- rule model_name: a registry name, ``[a-z][a-z0-9_]{0,62}``;
- a stage is one of the federation's stages (the store's own check, with the value shown short).

What a refused change puts on the trail keeps the same limits: a name or stage that broke its rule
is replaced by ``WITHHELD`` (``storable``), so nothing a caller typed reaches the trail unchecked.
"""

from __future__ import annotations

import re

from fedstore.aggregator.errors import Rejected
from fedstore.federation.traffic import STAGES

MAX_WHY = 280
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")  # matched whole: "$" would let a final newline through
_STAGE_LIKE = re.compile(r"[a-z0-9_]{0,20}")
# what the trail holds in place of a why that broke the rule (the refusal itself is on the trail)
WITHHELD = "(withheld: broke rule free_text)"


def why_refusal(text: str) -> str:
    """Why ``text`` may not be stored as a reason (rule free_text), or ""."""
    if len(text) > MAX_WHY:
        return f"why is {len(text):,} characters; at most {MAX_WHY}"
    if not text.isprintable():
        return "why must be one line of printable characters (no control or invisible characters)"
    return ""


def check_why(text: str) -> None:
    refusal = why_refusal(text)
    if refusal:
        raise Rejected(refusal, rule="free_text")


def storable_why(text: str) -> str:
    """``text`` when it keeps the rule, else a fixed note: a refused change is still on the trail."""
    return WITHHELD if why_refusal(text) else text


def storable_name(name: str) -> str:
    return name if name == "" or NAME.fullmatch(name) else WITHHELD


def storable_stage(stage: str) -> str:
    """A stage, or a mistaken one that still looks like a name (short, lower case): kept on the trail
    so the mistake can be read there; anything else is withheld."""
    return stage if stage in STAGES or _STAGE_LIKE.fullmatch(stage) else WITHHELD


def _short(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise Rejected(f"unknown stage {_short(stage)}; stages are {', '.join(STAGES)}")


def check_model_name(name: str, *, optional: bool = False) -> None:
    if optional and name == "":
        return
    if not NAME.fullmatch(name):
        raise Rejected(f"{_short(name)} is not a model name: a lower-case letter, then up to 62 "
                       "lower-case letters, digits and _", rule="model_name")
