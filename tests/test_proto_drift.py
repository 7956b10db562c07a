"""The checked-in gRPC code is exactly what the pinned grpcio-tools makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
FIX = "the generated code is out of date with proto/: run `make proto` and commit the result"


def _protos() -> list[Path]:
    return sorted(PROTO.rglob("*.proto"))


def _generated(proto: Path) -> list[Path]:
    """Where `make proto` puts the modules of one .proto (-Iproto, output to the repo root)."""
    relative = proto.relative_to(PROTO).with_suffix("")
    return [ROOT / relative.parent / f"{relative.name}{suffix}" for suffix in SUFFIXES]


def test_chunks_proto_is_there() -> None:
    assert PROTO / "protheon" / "rpc" / "v1" / "chunks.proto" in _protos()


def test_every_proto_has_generated_modules() -> None:
    missing = [
        str(path.relative_to(ROOT))
        for proto in _protos()
        for path in _generated(proto)
        if not path.is_file()
    ]
    assert not missing, f"no generated module {missing}: {FIX}"


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    protos = [str(p.relative_to(ROOT)) for p in _protos()]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"protoc failed: {result.stderr}"

    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(ROOT) for proto in _protos() for p in _generated(proto))
    assert made == expected  # protoc wrote exactly the three modules per .proto
    for relative in made:
        fresh = (tmp_path / relative).read_bytes()
        checked_in = ROOT / relative
        assert checked_in.is_file(), f"{relative} is missing: {FIX}"
        assert checked_in.read_bytes() == fresh, f"{relative} differs: {FIX}"
