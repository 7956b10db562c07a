"""The master's gRPC chunk service, served for real on 127.0.0.1 with the ledger on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protheon.master.chunk_server import (
    SERVICE_NAME,
    OpenChunk,
    OpenChunks,
)
from protheon.rpc.v1 import chunks_pb2, chunks_pb2_grpc
from protheon.rpc_auth import RpcSecurity
from protheon.worker.chunk_client import ChunkClient, ChunkUnavailable
from tests.chunk_service import PIECE_BYTES, Served, mark_done
from tests.conftest import free_port
from tests.oracle import read_lines


def test_fetch_returns_the_exact_bytes(served: Served) -> None:
    data, tail = served.client.fetch(served.job_id, served.chunk.byte_size)
    assert tail == b""
    assert data == served.chunk.path.read_bytes()
    assert len(list(read_lines(served.chunk.path))) == served.chunk.line_count


def test_stream_comes_in_bounded_pieces_with_offsets(served: Served) -> None:
    stub = chunks_pb2_grpc.ChunkServiceStub(served.channel)  # type: ignore[no-untyped-call]
    pieces = list(
        stub.StreamChunk(
            chunks_pb2.StreamChunkRequest(job_id=served.job_id, worker="raw"),
            timeout=10,
            metadata=served.security.metadata,
        )
    )
    size = served.chunk.byte_size
    assert len(pieces) == -(-size // PIECE_BYTES)
    offset = 0
    for piece in pieces:
        assert piece.offset == offset
        assert piece.total_size == size
        assert 0 < len(piece.data) <= PIECE_BYTES
        offset += len(piece.data)
    assert offset == size
    assert all(len(p.data) == PIECE_BYTES for p in pieces[:-1])
    assert b"".join(p.data for p in pieces) == served.chunk.path.read_bytes()


def test_fetch_of_a_job_that_is_not_open_is_not_found(served: Served) -> None:
    with pytest.raises(ChunkUnavailable, match="NOT_FOUND") as caught:
        served.client.fetch(served.job_id + 1000, 10)
    assert f"job {served.job_id + 1000}" in str(caught.value)


def test_fetch_with_the_wrong_expected_size_is_refused(served: Served) -> None:
    with pytest.raises(ChunkUnavailable, match="expected 0 of"):
        served.client.fetch(served.job_id, served.chunk.byte_size + 1)


def test_chunk_file_gone_is_not_found(served: Served) -> None:
    served.chunk.path.unlink()
    with pytest.raises(ChunkUnavailable, match=r"NOT_FOUND.*gone"):
        served.client.fetch(served.job_id, served.chunk.byte_size)


def test_chunk_shorter_than_registered_is_data_loss(served: Served) -> None:
    size = served.chunk.byte_size
    served.chunks.add(OpenChunk(served.job_id, served.chunk.path, size + 10))
    with pytest.raises(ChunkUnavailable, match="DATA_LOSS"):
        served.client.fetch(served.job_id, size + 10)


def test_complete_is_refused_until_the_ledger_says_done(served: Served) -> None:
    assert served.client.complete(served.job_id) is False
    assert served.chunk.path.exists()
    assert served.chunks.get(served.job_id) is not None
    # Still served.
    assert served.client.fetch(served.job_id, served.chunk.byte_size) == (
        served.chunk.path.read_bytes(),
        b"",
    )

    mark_done(served.dsn, served.job_id)
    assert served.client.complete(served.job_id) is True
    assert not served.chunk.path.exists()
    assert served.chunks.get(served.job_id) is None
    with pytest.raises(ChunkUnavailable, match="NOT_FOUND"):
        served.client.fetch(served.job_id, served.chunk.byte_size)
    # A repeated done signal releases nothing more.
    assert served.client.complete(served.job_id) is False


def test_complete_of_a_done_job_that_is_not_open_is_false(served: Served) -> None:
    with psycopg.connect(served.dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO protheon.jobs (file_id, seq, first_line, line_count, byte_size,"
            " raw_size, status) SELECT file_id, 1, 41, 1, 1, 1, 'done' FROM protheon.jobs"
            " WHERE job_id = %s RETURNING job_id",
            (served.job_id,),
        ).fetchone()
    assert row is not None
    assert served.client.complete(int(row[0])) is False
    assert served.chunk.path.exists()


def test_client_against_no_master(security: RpcSecurity) -> None:
    client = ChunkClient(f"127.0.0.1:{free_port()}", "nobody", security)  # nothing listens
    try:
        assert client.complete(1) is False
        with pytest.raises(ChunkUnavailable, match="UNAVAILABLE"):
            client.fetch(1, 1)
    finally:
        client.close()


def test_health_service_answers_serving(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", SERVICE_NAME):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_wait_below_blocks_until_a_release(tmp_path: Path) -> None:
    chunks = OpenChunks()
    files = []
    for job_id in (1, 2):
        path = tmp_path / f"{job_id}.zst"
        path.write_bytes(b"x")
        files.append(path)
        chunks.add(OpenChunk(job_id, path, 1))
    assert len(chunks) == 2
    assert sorted(chunks.job_ids()) == [1, 2]

    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(chunks.wait_below(2, timeout=10)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and result == []  # still waiting for room

    assert chunks.release(1) is True
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert result == [True]
    assert time.monotonic() - started < 5
    assert not files[0].exists() and files[1].exists()
    assert chunks.release(1) is False  # already released


def test_wait_below_times_out_and_returns_at_once_when_there_is_room(tmp_path: Path) -> None:
    chunks = OpenChunks()
    path = tmp_path / "1.zst"
    path.write_bytes(b"x")
    chunks.add(OpenChunk(1, path, 1))
    started = time.monotonic()
    assert chunks.wait_below(1, timeout=0.2) is False
    assert time.monotonic() - started >= 0.2
    assert chunks.wait_below(2, timeout=5) is True
