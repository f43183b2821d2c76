"""Is a process that left work behind still running? (Killed jobs and builds are recognised by it.)"""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while the process (on this host) runs; a zombie is not alive: it cannot finish its work."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
