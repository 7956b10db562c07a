"""Who may talk to the master: TLS from the lab's CA plus the shared token, else nothing."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protheon import rpc_auth
from protheon.certs import make_certs
from protheon.config import ConfigError, Settings
from protheon.rpc.v1 import chunks_pb2, chunks_pb2_grpc
from protheon.rpc_auth import RpcSecurity, open_channel
from protheon.worker.chunk_client import ChunkClient, ChunkUnavailable
from tests.chunk_service import Served
from tests.conftest import run_protheon


def _stub(channel: grpc.Channel) -> chunks_pb2_grpc.ChunkServiceStub:
    return chunks_pb2_grpc.ChunkServiceStub(channel)  # type: ignore[no-untyped-call]


def _stream(served: Served, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> int:
    request = chunks_pb2.StreamChunkRequest(job_id=served.job_id, worker="x")
    pieces = _stub(channel).StreamChunk(request, timeout=10, metadata=metadata)
    return sum(len(piece.data) for piece in pieces)


def test_the_right_token_over_tls_gets_the_chunk(served: Served) -> None:
    assert _stream(served, served.channel, tuple(served.security.metadata)) > 0


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer wrong-token-of-some-length"),), (("authorization", ""),)],
    ids=["no token", "wrong token", "empty"],
)
def test_a_call_without_the_token_is_unauthenticated(
    served: Served, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stream(served, served.channel, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as caught:
        _stub(served.channel).CompleteJob(
            chunks_pb2.CompleteJobRequest(job_id=served.job_id, worker="x"),
            timeout=10, metadata=metadata,
        )  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert served.chunk.path.exists()


def test_a_worker_with_a_wrong_token_fails_its_fetch_for_good(served: Served) -> None:
    wrong = dataclasses.replace(served.security, token="x" * 43)
    client = ChunkClient(f"127.0.0.1:{served.port}", "intruder", wrong)
    try:
        with pytest.raises(ChunkUnavailable, match="UNAUTHENTICATED") as caught:
            client.fetch(served.job_id, served.chunk.byte_size)
        assert not caught.value.transient, "a wrong token is not waited out"
    finally:
        client.close()


def test_plaintext_and_foreign_ca_clients_never_get_through(served: Served, tmp_path: Path) -> None:
    target = f"127.0.0.1:{served.port}"
    with grpc.insecure_channel(target) as plain, pytest.raises(grpc.RpcError) as caught:
        _stream(served, plain, tuple(served.security.metadata))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS, no handshake
    make_certs(tmp_path / "other")  # another lab's CA: the master's certificate is not trusted
    other = rpc_auth.load(Settings(rpc_tls_dir=tmp_path / "other"))
    with open_channel(target, other) as channel, pytest.raises(grpc.RpcError) as caught:
        _stream(served, channel, tuple(served.security.metadata))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_answers_without_the_token_but_only_over_tls(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # no metadata at all
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_certs_command_writes_private_files_once(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    env = {**os.environ, "PROTHEON_RPC_TLS_DIR": str(folder)}
    first = run_protheon("certs", "--host", "10.1.2.3", "--host", "master.lan", env=env)
    assert first.returncode == 0, first.stderr
    assert {p.name for p in folder.iterdir()} == {
        "ca.pem", "ca.key", "master.pem", "master.key", "token"
    }  # fmt: skip
    for name in ("ca.key", "master.key", "token"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(folder / "master.pem")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:10.1.2.3" in text and "DNS:master.lan" in text
    token = (folder / "token").read_bytes()
    again = run_protheon("certs", env=env)
    assert again.returncode == 0 and "already holds" in again.stdout
    assert (folder / "token").read_bytes() == token


def test_missing_files_are_a_clear_error_and_plaintext_needs_saying(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read token.*protheon certs --dir"):
        rpc_auth.load(Settings(rpc_tls_dir=tmp_path / "nothing"))
    env = {**os.environ, "PROTHEON_RPC_TLS_DIR": str(tmp_path / "nothing")}
    result = run_protheon("worker", "--master", "127.0.0.1:1", env=env)
    assert result.returncode == 2 and "cannot read token" in result.stderr
    assert rpc_auth.load(Settings(rpc_plaintext=True)) == RpcSecurity(plaintext=True)


def test_certs_never_issue_a_master_certificate_from_a_lost_ca(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    make_certs(folder)
    (folder / "ca.key").unlink()
    (folder / "master.pem").unlink()
    ca = (folder / "ca.pem").read_bytes()
    result = run_protheon("certs", "--dir", str(folder), env=dict(os.environ))
    assert result.returncode == 2 and "ca.key is missing" in result.stderr
    assert (folder / "ca.pem").read_bytes() == ca, "the CA workers trust is kept"
