"""Feast definitions shared by every region.

Plain Feast objects. Source paths are relative, so Feast resolves them against each region's own
repo path (its data directory): the same definitions read MY's Parquet in MY and SG's in SG.
"""

from fedstore.feature_repo.definitions import (
    ALL_OBJECTS,
    ALL_VIEWS,
    LABEL_VIEWS,
    FEATURE_SERVICES,
    FEATURE_VIEWS,
    PII_CLASSES,
    customer,
    customer_profile,
    customer_transactions,
    driver,
    driver_allocation,
    driver_performance,
    fraud_labels,
    fraud_scoring,
)

__all__ = [
    "ALL_OBJECTS",
    "ALL_VIEWS",
    "LABEL_VIEWS",
    "FEATURE_SERVICES",
    "FEATURE_VIEWS",
    "PII_CLASSES",
    "customer",
    "customer_profile",
    "customer_transactions",
    "driver",
    "driver_allocation",
    "driver_performance",
    "fraud_labels",
    "fraud_scoring",
]
