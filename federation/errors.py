"""The one error root of the federation contract."""


class ConfigError(ValueError):
    """The federation config is invalid. The message names the offending field in one line."""
