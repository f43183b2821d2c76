"""Errors a user can fix: printed as one line, exit code 2."""

from federation import ConfigError
from regions.errors import RegionError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, RegionError)

