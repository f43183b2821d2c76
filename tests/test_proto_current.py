"""The committed generated code is exactly what `python -m proto.generate` produces now."""

from __future__ import annotations

from pathlib import Path

from proto.generate import PROTO_ROOT, generate


def test_generated_code_is_current(tmp_path):
    written = generate(tmp_path)
    assert written, "no .proto files found"
    stale = []
    for fresh in written:
        committed = PROTO_ROOT / fresh.relative_to(tmp_path)
        if not committed.exists() or committed.read_text() != fresh.read_text():
            stale.append(str(committed.relative_to(PROTO_ROOT.parent)))
    assert not stale, f"stale generated code, run `python -m proto.generate`: {stale}"


def test_every_proto_has_generated_code():
    for proto in PROTO_ROOT.rglob("*.proto"):
        assert (proto.parent / (proto.stem + "_pb2.py")).exists(), proto
        assert Path(proto.parent / (proto.stem + "_pb2_grpc.py")).exists(), proto
