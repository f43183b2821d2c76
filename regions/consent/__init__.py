"""Consent, purpose limitation and erasure inside a region: who may be used, for what, and when."""

from fedstore.regions.consent.gate import ConsentGate, consent_gate
from fedstore.regions.consent.records import CONSENT_FILE, ConsentRecords

__all__ = ["CONSENT_FILE", "ConsentGate", "ConsentRecords", "consent_gate"]
