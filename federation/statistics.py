"""The statistics catalog both sides of the border read: which features may be summarised, with
which clipping bounds and which histogram edges. Agreed federation-wide so the centre can merge
regions' histograms bin by bin and knows every released number's sensitivity."""

from __future__ import annotations

from dataclasses import dataclass

from fedstore.federation.errors import ConfigError

# A histogram is released only over at least this many entities per bin on average (rule
# histogram_bins, both sides): with fewer, a histogram of one row per bucket, or more buckets than
# rows, would be the rows themselves, binned. The precedent is NVFlare's HistogramBinsCleanser.
ROWS_PER_BIN = 2


@dataclass(frozen=True)
class FeatureSpec:
    ref: str  # "view:feature"
    lower: float  # values are clipped to [lower, upper] before anything is summed
    upper: float
    edges: tuple[float, ...]  # histogram bin edges, lower..upper, strictly increasing
    # the bounds are the feature's domain too (a rate outside [0, 1] is wrong data, not an outlier):
    # the data contract at a region's door refuses a value outside them (regions/store/data_contract.py).
    # Otherwise they only clip: an IDR avg_ticket above 500 is valid and saturates the top bin.
    domain: bool = False

    def __post_init__(self) -> None:
        if ":" not in self.ref:
            raise ConfigError(f"statistics catalog: {self.ref!r} is not 'view:feature'")
        if not self.lower < self.upper:
            raise ConfigError(f"statistics catalog: {self.ref}: lower must be below upper")
        e = self.edges
        if len(e) < 2 or e[0] != self.lower or e[-1] != self.upper or any(a >= b for a, b in zip(e, e[1:], strict=False)):
            raise ConfigError(
                f"statistics catalog: {self.ref}: edges must rise strictly from lower to upper"
            )

    @property
    def view(self) -> str:
        return self.ref.split(":", 1)[0]

    @property
    def sum_sensitivity(self) -> float:
        """How far one entity's clipped value can move the sum: the sum's noise is scaled to it."""
        return max(abs(self.lower), abs(self.upper))

    @property
    def sum_sq_sensitivity(self) -> float:
        """The same for the sum of squares."""
        return max(self.lower**2, self.upper**2)

    @property
    def feature(self) -> str:
        return self.ref.split(":", 1)[1]

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

    @property
    def least_count(self) -> int:
        """The fewest entities its histogram (and so the feature) is released over: ``ROWS_PER_BIN`` per bin."""
        return ROWS_PER_BIN * self.bins


def _linear(lower: float, upper: float, bins: int) -> tuple[float, ...]:
    step = (upper - lower) / bins
    return tuple(round(lower + i * step, 10) for i in range(bins)) + (upper,)


# The fraud_scoring features that are comparable across regions. Spend is left out: it is in
# local currency, so one set of edges cannot fit MYR and IDR; avg_ticket is in, and regions with
# large nominal amounts (IDR, VND) saturate its top bin. A per-currency normalisation belongs here
# before the centre trains on spend.
CATALOG: tuple[FeatureSpec, ...] = (
    FeatureSpec("customer_transactions:txn_count_7d", 0, 100, _linear(0, 100, 20)),
    FeatureSpec("customer_transactions:txn_count_30d", 0, 400, _linear(0, 400, 20)),
    FeatureSpec("customer_transactions:avg_ticket", 0, 500, _linear(0, 500, 25)),
    FeatureSpec("customer_transactions:chargeback_rate_30d", 0, 1, _linear(0, 1, 20), domain=True),
    FeatureSpec("customer_transactions:distinct_merchants_30d", 0, 60, _linear(0, 60, 20)),
    FeatureSpec("customer_transactions:night_txn_ratio_7d", 0, 1, _linear(0, 1, 20), domain=True),
    FeatureSpec("customer_profile:account_age_days", 0, 3650, _linear(0, 3650, 20)),
    FeatureSpec("customer_profile:kyc_level", 0, 4, (0, 1, 2, 3, 4), domain=True),
)


@dataclass(frozen=True)
class SegmentSpec:
    """A breakdown the federation agrees on: which entity attribute splits a region's statistics,
    and, per region, the only values that may cross the border (anything else is dropped there)."""

    dimension: str
    ref: str  # "view:feature" holding each entity's segment, e.g. its home city
    values: dict[str, tuple[str, ...]]  # region code -> allowed segment values

    @property
    def view(self) -> str:
        return self.ref.split(":", 1)[0]

    @property
    def feature(self) -> str:
        return self.ref.split(":", 1)[1]


CITIES: dict[str, tuple[str, ...]] = {
    "MY": ("Kuala Lumpur", "Johor Bahru", "Penang", "Kota Kinabalu", "Kuching"),
    "SG": ("Singapore Central", "Jurong", "Tampines", "Woodlands", "Punggol"),
    "ID": ("Jakarta", "Surabaya", "Bandung", "Medan", "Makassar"),
    "TH": ("Bangkok", "Chiang Mai", "Phuket", "Pattaya", "Khon Kaen"),
    "VN": ("Ho Chi Minh City", "Hanoi", "Da Nang", "Hai Phong", "Can Tho"),
    "PH": ("Manila", "Quezon City", "Cebu City", "Davao City", "Makati City"),
    "HK": ("Kowloon", "Hong Kong Island", "Sha Tin", "Tsuen Wan", "Tuen Mun"),
}

SEGMENTS: tuple[SegmentSpec, ...] = (SegmentSpec("home_city", "customer_profile:home_city", CITIES),)


def segment_spec(dimension: str) -> SegmentSpec:
    for s in SEGMENTS:
        if s.dimension == dimension:
            return s
    raise ConfigError(f"unknown segment {dimension!r}; known: {', '.join(s.dimension for s in SEGMENTS)}")
