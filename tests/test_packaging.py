"""The wheel installs one top-level package, ``fedstore``, and lives beside packages that own the
generic names its folders carry: proto-plus (a dependency of every google-cloud client, Feast's GCP
extra among them) installs a top-level ``proto``, which an earlier wheel of ours overwrote — and
uninstalling fedstore then broke proto-plus. Built and installed for real, offline, in a new venv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("aggregator", "cli", "dashboard", "feature_repo", "federation", "online", "proto", "regions", "serving")
PROTO_PLUS_MARK = "proto-plus's own module"


def _wheel(project: Path, dist: str, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(out), str(project)], check=True, capture_output=True, timeout=300)
    (wheel,) = [w for w in out.glob("*.whl") if w.name.startswith(dist.replace("-", "_") + "-")]
    return wheel


def _proto_plus_stand_in(tmp: Path) -> Path:
    """A distribution named proto-plus owning top-level ``proto`` as the real one does (the real one
    is not a dependency of this project, and tests do not download)."""
    project = tmp / "proto-plus"
    (project / "proto").mkdir(parents=True)
    (project / "proto" / "__init__.py").write_text(f"MARK = {PROTO_PLUS_MARK!r}\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "proto-plus"\nversion = "1.26.1"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["proto"]\n')
    return project


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheels")
    return {"fedstore": _wheel(ROOT, "fedstore", tmp), "proto-plus": _wheel(_proto_plus_stand_in(tmp), "proto-plus", tmp)}


def test_the_wheel_has_one_top_level_package_with_every_part_inside(wheels):
    names = zipfile.ZipFile(wheels["fedstore"]).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"fedstore"}
    for part in PARTS:
        assert f"fedstore/{part}/__init__.py" in names, part
    assert "fedstore/proto/fedstore/serving/v1/serving_pb2.py" in names
    assert "fedstore/proto/fedstore/serving/v1/serving.proto" in names  # the language-neutral contract
    assert "fedstore/proto/fedstore.binpb" in names  # and as one descriptor set, for other languages
    assert "fedstore/feature_repo/definitions.py" in names
    assert "fedstore/dashboard/templates/region.html" in names  # the pages ship their templates


@pytest.mark.slow  # a venv, two installs, two uninstalls: ~20 s
def test_fedstore_and_proto_plus_install_side_by_side_and_uninstall_cleanly(wheels, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = str(env / "bin" / "python")

    def pip(*args: str) -> None:
        subprocess.run([py, "-m", "pip", "--quiet", "--disable-pip-version-check", *args], check=True,
                       capture_output=True, timeout=300)

    def probe(code: str) -> str:
        # not the checkout, and not a PYTHONPATH pointing at one (its proto/ would stand in for proto-plus's)
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def installed_files_exist(dist: str) -> bool:
        return probe("import importlib.metadata as m; "
                     f"print(all(f.locate().exists() for f in m.files({dist!r})))") == "True"

    pip("install", "--no-index", "--no-deps", str(wheels["proto-plus"]))
    pip("install", "--no-index", "--no-deps", str(wheels["fedstore"]))
    assert probe("import proto; print(proto.MARK)") == PROTO_PLUS_MARK  # not overwritten by ours
    assert probe("import fedstore, os; print(os.path.dirname(fedstore.__file__))").startswith(str(env))
    assert installed_files_exist("proto-plus") and installed_files_exist("fedstore")

    pip("uninstall", "--yes", "fedstore")
    assert probe("import proto; print(proto.MARK)") == PROTO_PLUS_MARK  # proto-plus untouched
    assert installed_files_exist("proto-plus")

    pip("install", "--no-index", "--no-deps", str(wheels["fedstore"]))
    pip("uninstall", "--yes", "proto-plus")
    assert installed_files_exist("fedstore")  # every file of ours still there
    assert probe("import importlib.util as u; print(u.find_spec('proto') is None)") == "True"
