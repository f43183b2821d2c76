"""The seven jurisdictions the federation knows, and the data-protection law of each.

A region's code fixes its jurisdiction and law: a config that says MY is under PDPO is a mistake,
and is refused on load rather than carried into lineage records and model tags.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Jurisdiction:
    code: str
    name: str
    law: str
    country: str  # ISO 3166 alpha-2, for calendars


JURISDICTIONS: dict[str, Jurisdiction] = {
    j.code: j
    for j in (
        Jurisdiction("MY", "Malaysia", "PDPA-MY", "MY"),
        Jurisdiction("SG", "Singapore", "PDPA-SG", "SG"),
        Jurisdiction("ID", "Indonesia", "UU PDP", "ID"),
        Jurisdiction("TH", "Thailand", "PDPA-TH", "TH"),
        Jurisdiction("VN", "Vietnam", "Decree 13/2023", "VN"),
        Jurisdiction("PH", "Philippines", "DPA-PH", "PH"),
        Jurisdiction("HK", "Hong Kong", "PDPO", "HK"),
    )
}
