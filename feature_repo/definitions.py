"""Entities, feature views and feature services for a ride-hailing + payments business.

Every field carries a ``pii_class`` tag, read by the publishing side to decide what may ever be
summarised (never what may cross a border: only anonymised statistics do).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from fedstore.feature_repo.sources import (
    customer_profile_source,
    customer_transactions_source,
    driver_performance_source,
    fraud_labels_source,
)

# PII classes, from least to most sensitive.
#   behavioural: aggregate behaviour of one person (personal data under every PDPA, but no identifier)
#   quasi_identifier: could single a person out in combination (home city, account age)
#   identifier: names a person directly (join keys)
PII_CLASSES = ("behavioural", "quasi_identifier", "identifier")


def _pii(klass: str) -> dict[str, str]:
    if klass not in PII_CLASSES:
        raise ValueError(f"unknown pii_class {klass!r}; expected one of {PII_CLASSES}")
    return {"pii_class": klass}


customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A rider / wallet holder, pseudonymous id assigned inside the region.",
    tags=_pii("identifier"),
)

driver = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.INT64,
    description="A driver-partner, pseudonymous id assigned inside the region.",
    tags=_pii("identifier"),
)

customer_transactions = FeatureView(
    name="customer_transactions",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="txn_count_7d", dtype=Int64, tags=_pii("behavioural")),
        Field(name="txn_count_30d", dtype=Int64, tags=_pii("behavioural")),
        Field(name="spend_7d", dtype=Float64, tags=_pii("behavioural")),
        Field(name="spend_30d", dtype=Float64, tags=_pii("behavioural")),
        Field(name="avg_ticket", dtype=Float64, tags=_pii("behavioural")),
        Field(name="chargeback_rate_30d", dtype=Float64, tags=_pii("behavioural")),
        Field(name="distinct_merchants_30d", dtype=Int64, tags=_pii("behavioural")),
        Field(name="night_txn_ratio_7d", dtype=Float64, tags=_pii("behavioural")),
    ],
    source=customer_transactions_source,
    online=True,
    tags={"team": "payments-risk"},
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        Field(name="account_age_days", dtype=Int64, tags=_pii("quasi_identifier")),
        Field(name="kyc_level", dtype=Int64, tags=_pii("behavioural")),
        Field(name="home_city", dtype=String, tags=_pii("quasi_identifier")),
    ],
    source=customer_profile_source,
    online=True,
    tags={"team": "payments-risk"},
)

driver_performance = FeatureView(
    name="driver_performance",
    entities=[driver],
    ttl=timedelta(hours=6),
    schema=[
        Field(name="acceptance_rate_7d", dtype=Float64, tags=_pii("behavioural")),
        Field(name="avg_rating_30d", dtype=Float64, tags=_pii("behavioural")),
        Field(name="trips_last_hour", dtype=Int64, tags=_pii("behavioural")),
        Field(name="cancellations_7d", dtype=Int64, tags=_pii("behavioural")),
        Field(name="online_hours_7d", dtype=Float64, tags=_pii("behavioural")),
        Field(name="completed_trips_30d", dtype=Int64, tags=_pii("behavioural")),
    ],
    source=driver_performance_source,
    online=True,
    tags={"team": "marketplace"},
)

fraud_labels = FeatureView(
    name="fraud_labels",
    entities=[customer],
    ttl=timedelta(days=1),  # a label applies to the customer-day it was recorded for
    schema=[Field(name="is_fraud", dtype=Int64, tags=_pii("behavioural"))],
    source=fraud_labels_source,
    online=False,  # labels train models; they are never served
    tags={"team": "payments-risk", "role": "label"},
)

fraud_scoring = FeatureService(
    name="fraud_scoring",
    features=[customer_transactions, customer_profile[["account_age_days", "kyc_level"]]],
    description="Payment fraud model inputs.",
    tags={"label": "is_fraud"},
)

driver_allocation = FeatureService(
    name="driver_allocation",
    features=[driver_performance],
    description="Driver dispatch / allocation model inputs.",
)

FEATURE_VIEWS = (customer_transactions, customer_profile, driver_performance)  # served online
LABEL_VIEWS = (fraud_labels,)  # offline only
ALL_VIEWS = FEATURE_VIEWS + LABEL_VIEWS
FEATURE_SERVICES = (fraud_scoring, driver_allocation)
ALL_OBJECTS = (customer, driver, *ALL_VIEWS, *FEATURE_SERVICES)
