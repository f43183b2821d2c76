"""The neutral contract both sides of the border read. Imports nothing of the product."""

from federation.config import (
    AggregatorConfig,
    ClientTLSConfig,
    FederationConfig,
    OnlineStoreConfig,
    PrivacyConfig,
    QuarantineConfig,
    TrainingConfig,
    RegionConfig,
    ServingConfig,
    TokenConfig,
    load_config,
    parse_config,
)
from federation.errors import ConfigError
from federation.jurisdictions import JURISDICTIONS, Jurisdiction

__all__ = [
    "AggregatorConfig",
    "ClientTLSConfig",
    "JURISDICTIONS",
    "ConfigError",
    "FederationConfig",
    "Jurisdiction",
    "OnlineStoreConfig",
    "PrivacyConfig",
    "QuarantineConfig",
    "TrainingConfig",
    "RegionConfig",
    "ServingConfig",
    "TokenConfig",
    "load_config",
    "parse_config",
]
