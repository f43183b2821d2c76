"""Errors a user can fix: printed as one line, exit code 1 (2 is for a wrong command line)."""

import errno

from fedstore.federation import ConfigError
from fedstore.regions.errors import RegionError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, RegionError)

# a file the command must write (or read) that the machine refuses: a read-only volume, a directory
# of another user, a full disk. The operator fixes the machine, not the code: one line, not a traceback
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def storage_problem(e: OSError) -> str | None:
    """One line for an OSError the machine's storage caused, naming the file; None for any other."""
    if e.errno not in STORAGE_ERRNOS or not e.filename:
        return None
    return f"{e.filename}: {e.strerror}"
