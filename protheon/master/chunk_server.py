"""The gRPC face of the master: serve chunk bytes of open jobs, take workers' done signals.

Requests name a job id, never a path: the registry below is the only way to a file, and it holds
just the chunks of jobs that are not done. A done signal is believed only once the ledger says
the job is done (the worker commits before it signals), so a confused or hostile client cannot
make the master delete a chunk that still has to load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import TypeVar

import grpc
import psycopg
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protheon.master.ledger import MasterLedger
from protheon.master.metrics import CHUNK_SERVED_BYTES, CHUNK_STREAMS
from protheon.master.watcher import SourceIdentity
from protheon.rpc.v1 import chunks_pb2, chunks_pb2_grpc
from protheon.rpc_auth import RpcSecurity, TokenCheck, add_port

log = logging.getLogger(__name__)

SERVICE_NAME = "protheon.rpc.v1.ChunkService"


@dataclasses.dataclass(frozen=True)
class OpenChunk:
    job_id: int
    path: Path
    size: int
    offset: int = 0  # where the bytes start in ``path``
    tail: bytes = b""  # sent after the bytes (passed-through chunks)
    owned: bool = True  # a chunk file to delete when done; False: the source itself
    source: SourceIdentity | None = None  # the source as registered, when serving from it


class OpenChunks:
    """Thread-safe registry of servable chunks; ``released`` wakes a splitter waiting for room."""

    def __init__(self) -> None:
        self._chunks: dict[int, OpenChunk] = {}
        self._lock = threading.Condition()

    def add(self, chunk: OpenChunk) -> None:
        with self._lock:
            self._chunks[chunk.job_id] = chunk

    def get(self, job_id: int) -> OpenChunk | None:
        with self._lock:
            return self._chunks.get(job_id)

    def job_ids(self) -> list[int]:
        with self._lock:
            return list(self._chunks)

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)

    def release(self, job_id: int) -> bool:
        """Forget the chunk and delete its file; False if it was not open."""
        with self._lock:
            chunk = self._chunks.pop(job_id, None)
            self._lock.notify_all()
        if chunk is None:
            return False
        if chunk.owned:
            chunk.path.unlink(missing_ok=True)
        return True

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Block until fewer than ``limit`` chunks are open (or the timeout passes)."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._chunks) < limit, timeout)


class ChunkService(chunks_pb2_grpc.ChunkServiceServicer):
    def __init__(self, chunks: OpenChunks, ledger: MasterLedger, piece_bytes: int) -> None:
        self._chunks = chunks
        self._ledger = ledger
        self._piece_bytes = piece_bytes

    def StreamChunk(
        self, request: chunks_pb2.StreamChunkRequest | _Unparsable, context: grpc.ServicerContext
    ) -> Iterator[chunks_pb2.ChunkPiece]:
        request = _checked(request, context)
        chunk = self._chunks.get(request.job_id)
        if chunk is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} has no open chunk")
        assert chunk is not None
        try:
            fh = chunk.path.open("rb")
        except FileNotFoundError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id}: chunk is gone")
        with fh, CHUNK_STREAMS.track_inprogress():
            if chunk.source is not None and (change := chunk.source.differs(os.fstat(fh.fileno()))):
                log.error("job %d: %s: %s", request.job_id, chunk.path.name, change)
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"source {change}")
            fh.seek(chunk.offset)
            offset = 0
            while context.is_active() and offset < chunk.size:
                data = fh.read(min(self._piece_bytes, chunk.size - offset))
                if not data:
                    break
                yield chunks_pb2.ChunkPiece(data=data, offset=offset, total_size=chunk.size)
                offset += len(data)
                CHUNK_SERVED_BYTES.inc(len(data))
        if offset != chunk.size and context.is_active():
            context.abort(grpc.StatusCode.DATA_LOSS, f"job {request.job_id}: chunk size changed")
        # The tail (the end of a line crossing the cut) can be as long as a line: in pieces too.
        for start in range(0, len(chunk.tail), self._piece_bytes):
            if not context.is_active():
                break
            tail = chunk.tail[start : start + self._piece_bytes]
            yield chunks_pb2.ChunkPiece(offset=offset, total_size=chunk.size, tail=tail)

    def CompleteJob(
        self, request: chunks_pb2.CompleteJobRequest | _Unparsable, context: grpc.ServicerContext
    ) -> chunks_pb2.CompleteJobReply:
        request = _checked(request, context)
        try:
            done = self._ledger.done_among([request.job_id])
        except psycopg.Error as exc:
            # The sweep deletes the chunk later, from the ledger; the worker need not retry.
            log.warning("job %d: cannot check the ledger (%s)", request.job_id, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, "ledger unavailable")
        if not done:
            return chunks_pb2.CompleteJobReply(released=False)
        released = self._chunks.release(request.job_id)
        if released:
            log.debug("job %d done by %s; chunk deleted", request.job_id, request.worker)
        return chunks_pb2.CompleteJobReply(released=released)


_Request = TypeVar("_Request", chunks_pb2.StreamChunkRequest, chunks_pb2.CompleteJobRequest)
MAX_WORKER_NAME = 200


class _Unparsable:
    """Stands for request bytes that are not a message (gRPC itself takes None as a failed
    deserialization and answers INTERNAL)."""


UNPARSABLE = _Unparsable()


def _checked(request: _Request | _Unparsable, context: grpc.ServicerContext) -> _Request:
    """A request that parsed and names a plausible job, or INVALID_ARGUMENT."""
    if isinstance(request, _Unparsable):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a valid request message")
    assert not isinstance(request, _Unparsable)
    if request.job_id < 1 or len(request.worker) > MAX_WORKER_NAME:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"job_id must be positive, worker at most {MAX_WORKER_NAME} characters",
        )
    return request


def _lenient(message: type[_Request]) -> Callable[[bytes], _Request | _Unparsable]:
    """Parse a request, or stand in for bytes that are not one: answered INVALID_ARGUMENT by
    the service instead of gRPC's generic INTERNAL for a failed deserialization."""

    def parse(data: bytes) -> _Request | _Unparsable:
        try:
            return message.FromString(data)
        except DecodeError:
            return UNPARSABLE

    return parse


def _add_service(server: grpc.Server, service: ChunkService) -> None:
    handlers = {
        "StreamChunk": grpc.unary_stream_rpc_method_handler(
            service.StreamChunk,
            request_deserializer=_lenient(chunks_pb2.StreamChunkRequest),
            response_serializer=chunks_pb2.ChunkPiece.SerializeToString,
        ),
        "CompleteJob": grpc.unary_unary_rpc_method_handler(
            service.CompleteJob,
            request_deserializer=_lenient(chunks_pb2.CompleteJobRequest),
            response_serializer=chunks_pb2.CompleteJobReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def start_server(
    listen: str, service: ChunkService, security: RpcSecurity, max_workers: int = 16
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Start serving; returns the server, its health servicer (to flip on drain) and the port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[] if security.plaintext else [TokenCheck(security.token)],
        options=[("grpc.so_reuseport", 0)],
    )
    _add_service(server, service)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = add_port(server, listen, security)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port
