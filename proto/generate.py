"""Generates the Python code for every .proto under proto/ — the one command: `python -m fedstore.proto.generate`.

Generated modules sit beside their .proto (``proto/fedstore/serving/v1/serving_pb2.py``) and import
each other as ``fedstore.proto.fedstore…``. ``tests/test_proto_current.py`` regenerates into a temporary
directory and fails when the committed code is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *map(str, protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for proto in protos:
        stem = out_dir / proto.with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = stem.parent / (stem.name + suffix)
            if path.exists():
                _fix_imports(path)
                written.append(path)
        for parent in (out_dir / proto).parents:
            if parent == out_dir.parent:
                break
            init = parent / "__init__.py"
            if not init.exists():
                init.write_text("")
    return written


def _fix_imports(path: Path) -> None:
    # protoc emits `from fedstore.serving.v1 import x_pb2`; our package root is `proto`.
    text = path.read_text()
    text = re.sub(r"^from fedstore(\.| )", r"from proto.fedstore\1", text, flags=re.M)
    text = re.sub(r"^import fedstore\.", "import proto.fedstore.", text, flags=re.M)
    path.write_text(text)


if __name__ == "__main__":
    for p in generate():
        print(p.relative_to(PROTO_ROOT.parent))
    sys.exit(0)
