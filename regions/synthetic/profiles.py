"""What makes each region's synthetic data its own: currency scale, habits, cities, fraud rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeasonalEvent:
    """A holiday from the ``holidays`` package (matched by name) and what it does to behaviour."""

    holiday: str  # substring of the holiday's English name in the ``holidays`` package
    label: str  # what operators call it
    spend: float  # peak multiplier on ticket size
    activity: float  # peak multiplier on transactions / trips


@dataclass(frozen=True)
class RegionProfile:
    code: str
    country: str  # ISO code for the holidays package
    currency: str
    avg_ticket: float  # typical ride / payment, in local currency
    ticket_sigma: float  # lognormal spread of a customer's ticket size
    txns_per_day: float  # mean daily transactions of an average customer
    night_share: float  # share of transactions between 22:00 and 05:00
    fraud_rate: float  # target share of fraudulent customer-days
    cities: tuple[str, ...]
    city_weights: tuple[float, ...]
    acceptance: float  # drivers' mean acceptance rate
    rating: float  # drivers' mean rating
    trips_per_hour: float  # a driver's mean trips in a busy hour
    id_offset: int  # entity ids never collide across regions
    events: tuple[SeasonalEvent, ...]


_CNY = SeasonalEvent("Chinese New Year", "Chinese New Year", spend=1.35, activity=1.2)

PROFILES: dict[str, RegionProfile] = {
    p.code: p
    for p in (
        RegionProfile("MY", "MY", "MYR", 45.0, 0.55, 1.6, 0.12, 0.030,
                      ("Kuala Lumpur", "Johor Bahru", "Penang", "Kota Kinabalu", "Kuching"),
                      (0.45, 0.2, 0.15, 0.1, 0.1), 0.86, 4.78, 1.4, 1_000_000_000,
                      (SeasonalEvent("Eid al-Fitr", "Hari Raya Aidilfitri", spend=1.5, activity=1.3), _CNY)),
        RegionProfile("SG", "SG", "SGD", 30.0, 0.45, 1.9, 0.10, 0.020,
                      ("Central", "Jurong", "Tampines", "Woodlands", "Punggol"),
                      (0.4, 0.2, 0.15, 0.15, 0.1), 0.91, 4.85, 1.6, 2_000_000_000,
                      (SeasonalEvent("Chinese New Year", "Chinese New Year", spend=1.4, activity=1.2),)),
        RegionProfile("ID", "ID", "IDR", 150_000.0, 0.65, 1.4, 0.15, 0.045,
                      ("Jakarta", "Surabaya", "Bandung", "Medan", "Makassar"),
                      (0.45, 0.2, 0.15, 0.12, 0.08), 0.82, 4.72, 1.3, 3_000_000_000,
                      (SeasonalEvent("Eid al-Fitr", "Idul Fitri (Lebaran)", spend=1.6, activity=1.35),)),
        RegionProfile("TH", "TH", "THB", 400.0, 0.55, 1.5, 0.14, 0.035,
                      ("Bangkok", "Chiang Mai", "Phuket", "Pattaya", "Khon Kaen"),
                      (0.5, 0.15, 0.15, 0.1, 0.1), 0.84, 4.75, 1.4, 4_000_000_000,
                      (SeasonalEvent("Songkran", "Songkran", spend=1.45, activity=1.3),)),
        RegionProfile("VN", "VN", "VND", 250_000.0, 0.6, 1.5, 0.11, 0.040,
                      ("Ho Chi Minh City", "Hanoi", "Da Nang", "Hai Phong", "Can Tho"),
                      (0.45, 0.3, 0.1, 0.1, 0.05), 0.83, 4.74, 1.3, 5_000_000_000,
                      (SeasonalEvent("Lunar New Year", "Tết", spend=1.55, activity=1.3),)),
        RegionProfile("PH", "PH", "PHP", 600.0, 0.6, 1.3, 0.13, 0.040,
                      ("Manila", "Quezon City", "Cebu City", "Davao City", "Makati"),
                      (0.3, 0.25, 0.2, 0.15, 0.1), 0.80, 4.70, 1.2, 6_000_000_000,
                      (SeasonalEvent("Christmas Day", "Christmas", spend=1.5, activity=1.3),)),
        RegionProfile("HK", "HK", "HKD", 120.0, 0.5, 1.8, 0.12, 0.025,
                      ("Kowloon", "Hong Kong Island", "New Territories", "Lantau", "Sha Tin"),
                      (0.35, 0.3, 0.2, 0.05, 0.1), 0.88, 4.80, 1.5, 7_000_000_000,
                      (SeasonalEvent("Chinese New Year", "Chinese New Year", spend=1.4, activity=1.25),)),
    )
}


def profile_for(code: str) -> RegionProfile:
    try:
        return PROFILES[code.upper()]
    except KeyError:
        raise ValueError(f"unknown region {code!r}; expected one of {', '.join(PROFILES)}") from None
