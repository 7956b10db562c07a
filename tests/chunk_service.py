"""A real chunk service on 127.0.0.1 (TLS + token, ledger on PostgreSQL) serving one chunk:
the ``served`` fixture of the chunk-server, authentication and fuzzing tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
import pytest

from protheon import rpc_auth
from protheon.config import Settings
from protheon.master.chunk_server import ChunkService, OpenChunk, OpenChunks, start_server
from protheon.master.ledger import MasterLedger
from protheon.master.splitter import Chunk, split_file
from protheon.pgcr.generator import GeneratorOptions, generate
from protheon.rpc_auth import RpcSecurity, open_channel
from protheon.worker.chunk_client import ChunkClient

PIECE_BYTES = 1000


@dataclasses.dataclass
class Served:
    port: int
    chunks: OpenChunks
    dsn: str
    job_id: int
    chunk: Chunk
    client: ChunkClient
    channel: grpc.Channel
    security: RpcSecurity


def insert_job(dsn: str, chunk: Chunk, name: str = "f.jsonl.zst") -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        file_row = conn.execute(
            "INSERT INTO protheon.files (name, size_bytes, mtime) VALUES (%s, %s, %s)"
            " RETURNING file_id",
            (name, 12345, datetime.now(UTC)),
        ).fetchone()
        assert file_row is not None
        job_row = conn.execute(
            "INSERT INTO protheon.jobs (file_id, seq, first_line, line_count, byte_size, raw_size)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING job_id",
            (
                file_row[0],
                chunk.seq,
                chunk.first_line,
                chunk.line_count,
                chunk.byte_size,
                chunk.raw_size,
            ),
        ).fetchone()
    assert job_row is not None
    return int(job_row[0])


def mark_done(dsn: str, job_id: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE protheon.jobs SET status = 'done' WHERE job_id = %s", (job_id,))


@pytest.fixture
def security(rpc_tls_dir: Path) -> RpcSecurity:
    return rpc_auth.load(Settings(rpc_tls_dir=rpc_tls_dir), master=True)


@pytest.fixture
def served(pg_dsn: str, tmp_path: Path, security: RpcSecurity) -> Iterator[Served]:
    source = generate(GeneratorOptions(out=tmp_path / "in", files=1, lines=40, seed=5))[0].path
    chunk = next(iter(split_file(source, tmp_path / "ws", 1, 40)))
    assert chunk.byte_size > 5 * PIECE_BYTES  # several pieces
    job_id = insert_job(pg_dsn, chunk)

    chunks = OpenChunks()
    chunks.add(OpenChunk(job_id, chunk.path, chunk.byte_size))
    ledger = MasterLedger(pg_dsn)
    server, _health, port = start_server(
        "127.0.0.1:0", ChunkService(chunks, ledger, PIECE_BYTES), security, max_workers=4
    )
    client = ChunkClient(f"127.0.0.1:{port}", "test-worker", security)
    channel = open_channel(f"127.0.0.1:{port}", security)
    try:
        yield Served(port, chunks, pg_dsn, job_id, chunk, client, channel, security)
    finally:
        channel.close()
        client.close()
        server.stop(None).wait()
        ledger.close()
