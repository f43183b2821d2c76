"""Monitoring a region: daily profiles, seasonality-aware drift, data gaps, freshness, triggers."""
