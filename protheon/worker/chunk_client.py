"""Fetch a job's chunk from the master over gRPC, and tell it when the job is done."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from protheon.rpc.v1 import chunks_pb2, chunks_pb2_grpc
from protheon.rpc_auth import RpcSecurity, open_channel

FETCH_TIMEOUT = 300.0
COMPLETE_TIMEOUT = 10.0


# The master is down, restarting or overloaded: worth waiting for, not worth a redelivery.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class ChunkUnavailable(RuntimeError):
    """The master could not serve the chunk (down, restarting, or the job is not open)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ChunkClient:
    def __init__(self, master: str, worker_name: str, security: RpcSecurity) -> None:
        self._channel = open_channel(
            master,
            security,
            options=[
                ("grpc.max_receive_message_length", 8 << 20),
                ("grpc.keepalive_time_ms", 30_000),
            ],
        )
        self._metadata = security.metadata
        self._stub = chunks_pb2_grpc.ChunkServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._worker = worker_name

    def close(self) -> None:
        self._channel.close()

    def fetch(
        self, job_id: int, expected_size: int, on_piece: Callable[[], None] = lambda: None
    ) -> tuple[bytes, bytes]:
        """The chunk's compressed bytes, checked for size and continuity, and its tail."""
        parts: list[bytes] = []
        tail: list[bytes] = []
        received = 0
        request = chunks_pb2.StreamChunkRequest(job_id=job_id, worker=self._worker)
        try:
            pieces = self._stub.StreamChunk(request, timeout=FETCH_TIMEOUT, metadata=self._metadata)
            for piece in pieces:
                if piece.offset != received or piece.total_size != expected_size:
                    raise ChunkUnavailable(
                        f"job {job_id}: piece at {piece.offset} of {piece.total_size},"
                        f" expected {received} of {expected_size}"
                    )
                parts.append(piece.data)
                received += len(piece.data)
                if piece.tail:
                    tail.append(piece.tail)
                on_piece()
        except grpc.RpcError as exc:
            code = exc.code()
            raise ChunkUnavailable(
                f"job {job_id}: {code.name}: {exc.details()}", transient=code in TRANSIENT_CODES
            ) from None
        if received != expected_size:
            raise ChunkUnavailable(f"job {job_id}: got {received} of {expected_size} bytes")
        return b"".join(parts), b"".join(tail)

    def complete(self, job_id: int) -> bool:
        """Best effort: the master also learns from the ledger if this never arrives."""
        try:
            reply = self._stub.CompleteJob(
                chunks_pb2.CompleteJobRequest(job_id=job_id, worker=self._worker),
                timeout=COMPLETE_TIMEOUT,
                metadata=self._metadata,
            )
        except grpc.RpcError:
            return False
        return bool(reply.released)
