"""The wire contracts as a buf module (buf.yaml): `buf lint` (STANDARD) is clean, nothing breaks
against the shipped descriptor set (the last release's contracts), and both checks bite.

buf is the one `make test` installs (`make buf`: from the npm registry into .tools/, the version
pinned in the Makefile). A missing buf fails here with what to run; it is never skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the packages on the wire, one per contract: buf's exceptions never reach them
WIRE_PACKAGES = {
    "proto/fedstore/aggregator/v1/aggregator.proto": "fedstore.aggregator.v1",
    "proto/fedstore/datasets/v1/datasets.proto": "fedstore.datasets.v1",
    "proto/fedstore/registry/v1/registry.proto": "fedstore.registry.v1",
    "proto/fedstore/serving/v1/serving.proto": "fedstore.serving.v1",
}


@pytest.fixture(scope="module")
def buf() -> str:
    version = re.search(r"^BUF_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert version, "the Makefile pins BUF_VERSION"
    path = ROOT / ".tools" / f"buf-{version[1]}" / "node_modules" / ".bin" / "buf"
    assert path.exists(), f"buf {version[1]} is not installed: run `make buf` (make test installs it first)"
    return str(path)


def run(buf: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([buf, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def module_copy(tmp_path: Path) -> Path:
    """buf.yaml and the .proto files, where a test may change them."""
    copy = tmp_path / "module"
    for name in ["buf.yaml", *WIRE_PACKAGES]:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, copy / name)
    return copy


def test_the_module_holds_every_contract_and_no_wire_package_changed():
    protos = subprocess.run(["git", "ls-files", "*.proto"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    assert sorted(protos) == sorted(WIRE_PACKAGES)  # a new .proto is named here, with its package
    for name, package in WIRE_PACKAGES.items():
        assert re.search(rf"^package {re.escape(package)};$", (ROOT / name).read_text(), re.M), name


def test_buf_lint_standard_is_clean(buf):
    out = run(buf, "lint")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == "" and out.stderr == ""


def test_no_breaking_change_against_the_shipped_descriptor_set(buf):
    out = run(buf, "breaking", "--against", "proto/fedstore.binpb")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_service_documents_its_auth_metadata():
    for name in WIRE_PACKAGES:
        text = (ROOT / name).read_text()
        services = re.findall(r"^service (\w+)", text, re.M)
        assert services, name
        for service in services:  # the comment right above each service says how to authenticate
            above = text[: text.index(f"service {service}")].rstrip().splitlines()[-6:]
            assert any("`authorization: Bearer <token>`" in line for line in above), (name, service)


def test_the_breaking_check_catches_a_renamed_field(buf, tmp_path):
    copy = module_copy(tmp_path)
    serving = copy / "proto/fedstore/serving/v1/serving.proto"
    text = serving.read_text()
    assert "string feature_service = " in text
    serving.write_text(text.replace("string feature_service = ", "string feature_service_name = ", 1))
    out = run(buf, "breaking", "--against", str(ROOT / "proto" / "fedstore.binpb"), cwd=copy)
    assert out.returncode != 0
    assert "feature_service" in out.stdout and "serving.proto" in out.stdout, out.stdout


def test_the_lint_exceptions_cover_only_the_files_named(buf, tmp_path):
    """A new contract meets the whole STANDARD set: the exceptions are the shipped names'."""
    copy = module_copy(tmp_path)
    new = copy / "proto/fedstore/extra/v1/extra.proto"
    new.parent.mkdir(parents=True)
    new.write_text('syntax = "proto3";\n\npackage fedstore.extra.v1;\n\n'
                   "enum Colour {\n  COLOUR_UNSPECIFIED = 0;\n  RED = 1;\n}\n\n"
                   "message Empty {}\n\nservice Extra {\n  rpc Get(Empty) returns (Empty);\n}\n")
    out = run(buf, "lint", cwd=copy)
    assert out.returncode != 0
    found = out.stdout
    assert 'Enum value name "RED" should be prefixed with "COLOUR_"' in found, found
    assert 'Service name "Extra" should be suffixed with "Service"' in found, found
    assert "serving.proto" not in found and "aggregator.proto" not in found, found
