"""Region-local Parquet sources. Paths are relative to the region's data directory."""

from feast import FileSource

# Each file lives under <region data dir>/sources/. Relative paths are resolved by Feast against
# the FeatureStore's repo_path, which is the region's own directory: no region can name another's.
SOURCE_DIR = "sources"

customer_transactions_source = FileSource(
    name="customer_transactions_source",
    path=f"{SOURCE_DIR}/customer_transactions.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Daily per-customer payment aggregates, computed inside the region.",
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path=f"{SOURCE_DIR}/customer_profile.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Slowly changing customer attributes.",
)

driver_performance_source = FileSource(
    name="driver_performance_source",
    path=f"{SOURCE_DIR}/driver_performance.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Hourly per-driver performance aggregates.",
)

# Labels: an offline-only view, joined into training sets point-in-time (never materialised online).
fraud_labels_source = FileSource(
    name="fraud_labels_source",
    path=f"{SOURCE_DIR}/fraud_labels.parquet",
    timestamp_field="event_timestamp",
    description="Confirmed fraud outcome per customer-day, known inside the region only.",
)
