"""The layer contracts of docs/architecture.md hold (import-linter, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    declared = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert f"Contracts: {declared} kept, 0 broken" in out.stdout  # every contract declared was checked


# Where a server may choose a gRPC status: its error boundary, and the lookup lane's one answer path
# (which sends what the boundary computes). Everywhere else a refusal is a ``federation.errors``
# exception. The rest of the list reads statuses a server sent (clients: retries, messages).
STATUS_CHOOSERS = {
    "federation/error_boundary.py": "the error boundary: the one table of kinds to codes",
    "serving/lookup_methods.py": "the lane's one answer path: OK, or the boundary's status",
    "serving/lookup_public.py": "sends the lane's answer path's status on grpc's public API",
}
STATUS_READERS = {
    "federation/channels.py": "client: which failures to retry",
    "regions/publishing/outbox.py": "client: which answers of the centre are final",
    "regions/publishing/secure_round.py": "client: a phase that closed before this region answered",
}
SERVER_PARTS = ("serving", "aggregator", "federation", "regions", "online", "dashboard", "feature_repo")


def test_only_the_error_boundaries_choose_a_grpc_status():
    import re

    chooses = re.compile(r"StatusCode\.(?!OK\b)[A-Z_]+|\bcontext\.abort(_with_status)?\(|\bgrpc\.Status\(")
    offenders = []
    for part in SERVER_PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name.endswith(("_pb2.py", "_pb2_grpc.py")) or name in STATUS_CHOOSERS or name in STATUS_READERS:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if chooses.search(line.split("#", 1)[0]):
                    offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, ("a status chosen outside the error boundaries: raise a federation.errors kind "
                           "instead\n" + "\n".join(offenders))
    for name in (*STATUS_CHOOSERS, *STATUS_READERS):  # the allow-list names files that exist
        assert (ROOT / name).is_file(), name


def test_no_rule_is_parsed_back_out_of_a_message():
    import re

    parsing = re.compile(r"""re\.(compile|match|search|fullmatch)\(r?["'][^"']*rule""")
    found = [f"{p.relative_to(ROOT)}" for part in SERVER_PARTS for p in (ROOT / part).rglob("*.py")
             if parsing.search(p.read_text())]
    assert not found, f"the rule is the exception's (FedstoreError.rule), not its message's: {found}"
