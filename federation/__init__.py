"""The neutral contract both sides of the border read. Imports nothing of the product."""

from fedstore.federation.config import (
    AggregatorConfig,
    ClientTLSConfig,
    FederationConfig,
    OnlineStoreConfig,
    PrivacyConfig,
    QuarantineConfig,
    RegionConfig,
    ServingConfig,
    TokenConfig,
    load_config,
    parse_config,
)
from fedstore.federation.errors import ConfigError
from fedstore.federation.jurisdictions import JURISDICTIONS, Jurisdiction

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
    "RegionConfig",
    "ServingConfig",
    "TokenConfig",
    "load_config",
    "parse_config",
]
