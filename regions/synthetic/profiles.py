"""What makes each region's synthetic data its own: currency scale, habits, cities, fraud, holidays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedstore.federation.statistics import CITIES  # the city names are the federation's segment catalog


@dataclass(frozen=True)
class SeasonalEvent:
    """A festival found in the ``holidays`` calendar by name, and what it does to behaviour.

    ``match`` is compared case-insensitively as a substring of the calendar's English holiday
    names, so "Eid al-Fitr" finds "Eid al-Fitr" and "Eid al-Fitr (Second Day)" alike; substitute
    days ("observed", "in lieu") are left out by the seasonality module.
    """

    match: str
    label: str  # what people in the region call it
    spend: float  # peak multiplier on ticket size
    activity: float  # peak multiplier on transactions and trips


@dataclass(frozen=True)
class RegionProfile:
    code: str
    country: str  # ISO 3166 code for the holidays package
    currency: str
    timezone: str  # the region's usual IANA zone (generate_region still takes one explicitly)
    avg_ticket: float  # typical ride / payment, in local currency units
    ticket_sigma: float  # lognormal spread of customers' typical ticket
    txns_per_day: float  # mean transactions of an average customer on an active day
    night_share: float  # share of transactions between 22:00 and 05:00 local time
    fraud_rate: float  # target share of fraudulent customer-days
    cities: tuple[str, ...]
    city_weights: tuple[float, ...]  # relative population of the cities above
    acceptance: float  # drivers' mean acceptance rate
    rating: float  # drivers' mean rating, 1-5
    trips_per_hour: float  # an online driver's mean completed trips in the busiest hour
    id_offset: int  # added to every entity id, so ids never collide across regions
    events: tuple[SeasonalEvent, ...]
    holiday_subdiv: str | None = None  # subdivision for the holidays package, if national isn't enough

    def __post_init__(self) -> None:
        if len(self.cities) != len(self.city_weights):
            raise ValueError(f"{self.code}: one weight per city is needed")


# Region index (1-based, so no region's ids start at 0) times 1e9: a region may hold up to a
# billion customers and a billion drivers before its ids could reach the next region's.
REGION_CODES = ("MY", "SG", "ID", "TH", "VN", "PH", "HK")
ID_SPACE = 1_000_000_000


def _offset(code: str) -> int:
    return (REGION_CODES.index(code) + 1) * ID_SPACE


def _cny(spend: float, activity: float) -> SeasonalEvent:
    return SeasonalEvent("chinese new year", "Chinese New Year", spend, activity)


_PROFILES = (
    RegionProfile(
        code="MY", country="MY", currency="MYR", timezone="Asia/Kuala_Lumpur",
        avg_ticket=45.0, ticket_sigma=0.55, txns_per_day=1.6, night_share=0.12, fraud_rate=0.030,
        cities=CITIES["MY"],
        city_weights=(0.45, 0.2, 0.15, 0.1, 0.1),
        acceptance=0.86, rating=4.78, trips_per_hour=2.0, id_offset=_offset("MY"),
        events=(SeasonalEvent("eid al-fitr", "Hari Raya Aidilfitri", 1.5, 1.3), _cny(1.35, 1.2)),
    ),
    RegionProfile(
        code="SG", country="SG", currency="SGD", timezone="Asia/Singapore",
        avg_ticket=30.0, ticket_sigma=0.45, txns_per_day=1.9, night_share=0.10, fraud_rate=0.020,
        cities=CITIES["SG"],
        city_weights=(0.4, 0.2, 0.15, 0.15, 0.1),
        acceptance=0.91, rating=4.85, trips_per_hour=2.2, id_offset=_offset("SG"),
        events=(_cny(1.4, 1.2),),
    ),
    RegionProfile(
        code="ID", country="ID", currency="IDR", timezone="Asia/Jakarta",
        avg_ticket=150_000.0, ticket_sigma=0.65, txns_per_day=1.4, night_share=0.15, fraud_rate=0.045,
        cities=CITIES["ID"],
        city_weights=(0.45, 0.2, 0.15, 0.12, 0.08),
        acceptance=0.82, rating=4.72, trips_per_hour=1.8, id_offset=_offset("ID"),
        events=(SeasonalEvent("eid al-fitr", "Idul Fitri (Lebaran)", 1.6, 1.35),),
    ),
    RegionProfile(
        code="TH", country="TH", currency="THB", timezone="Asia/Bangkok",
        avg_ticket=400.0, ticket_sigma=0.55, txns_per_day=1.5, night_share=0.14, fraud_rate=0.035,
        cities=CITIES["TH"],
        city_weights=(0.5, 0.15, 0.15, 0.1, 0.1),
        acceptance=0.84, rating=4.75, trips_per_hour=1.9, id_offset=_offset("TH"),
        events=(SeasonalEvent("songkran", "Songkran", 1.45, 1.3),),
    ),
    RegionProfile(
        code="VN", country="VN", currency="VND", timezone="Asia/Ho_Chi_Minh",
        avg_ticket=250_000.0, ticket_sigma=0.6, txns_per_day=1.5, night_share=0.11, fraud_rate=0.040,
        cities=CITIES["VN"],
        city_weights=(0.45, 0.3, 0.1, 0.1, 0.05),
        acceptance=0.83, rating=4.74, trips_per_hour=1.8, id_offset=_offset("VN"),
        events=(SeasonalEvent("lunar new year", "Tết", 1.55, 1.3),),
    ),
    RegionProfile(
        code="PH", country="PH", currency="PHP", timezone="Asia/Manila",
        avg_ticket=600.0, ticket_sigma=0.6, txns_per_day=1.3, night_share=0.13, fraud_rate=0.040,
        cities=CITIES["PH"],
        city_weights=(0.3, 0.25, 0.2, 0.15, 0.1),
        acceptance=0.80, rating=4.70, trips_per_hour=1.7, id_offset=_offset("PH"),
        events=(SeasonalEvent("christmas", "Christmas", 1.5, 1.3),),
    ),
    RegionProfile(
        code="HK", country="HK", currency="HKD", timezone="Asia/Hong_Kong",
        avg_ticket=120.0, ticket_sigma=0.5, txns_per_day=1.8, night_share=0.12, fraud_rate=0.025,
        cities=CITIES["HK"],
        city_weights=(0.35, 0.3, 0.15, 0.1, 0.1),
        acceptance=0.88, rating=4.80, trips_per_hour=2.1, id_offset=_offset("HK"),
        events=(_cny(1.4, 1.25),),
    ),
)

PROFILES: Mapping[str, RegionProfile] = MappingProxyType({p.code: p for p in _PROFILES})  # read-only


def profile_for(code: str) -> RegionProfile:
    """The profile of a region code (case-insensitive), or a ValueError naming the known codes."""
    try:
        return PROFILES[code.strip().upper()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown region {code!r}; expected one of {', '.join(PROFILES)}") from None
