"""The CLI's exit status, as scripts read it: 2 when the command line was wrong (argparse prints its
usage line), 1 when the command could not be done (one line says why)."""

USAGE, FAILED = 2, 1


def expected_exit(err: str) -> int:
    """The status a refusal with this stderr must have: argparse's usage errors print the usage."""
    return USAGE if "usage: fedstore" in err else FAILED
