"""Fuzzing the master's gRPC surface: random and malformed requests, with the token and
without. The master must answer each with a deliberate status code and keep serving."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protheon.rpc.v1 import chunks_pb2
from tests.chunk_service import Served

SERVICE = "/protheon.rpc.v1.ChunkService/"
# What the master answers on purpose; INTERNAL or UNKNOWN would mean something escaped it.
DELIBERATE = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
              grpc.StatusCode.UNAUTHENTICATED}  # fmt: skip
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

job_ids = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 10))
workers = st.one_of(st.text(max_size=300), st.just("x" * 10_000))


def _raw(served: Served, method: str, body: bytes, metadata: object, streaming: bool
         ) -> grpc.StatusCode:  # fmt: skip
    """Send ``body`` as the request bytes, unparsed; the call's final status."""
    kind = served.channel.unary_stream if streaming else served.channel.unary_unary
    call = kind(SERVICE + method, request_serializer=None, response_deserializer=None)
    try:
        result = call(body, timeout=10, metadata=metadata)
        if streaming:
            list(result)  # type: ignore[call-overload]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _still_serving(served: Served) -> None:
    data, _ = served.client.fetch(served.job_id, served.chunk.byte_size)
    assert data == served.chunk.path.read_bytes()
    reply = health_pb2_grpc.HealthStub(served.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_random_well_formed_requests_get_deliberate_answers(served: Served) -> None:
    @FUZZ
    @given(job_id=job_ids, worker=workers, streaming=st.booleans(), token=st.booleans())
    def check(job_id: int, worker: str, streaming: bool, token: bool) -> None:
        metadata = served.security.metadata if token else ()
        if streaming:
            request = chunks_pb2.StreamChunkRequest(job_id=job_id, worker=worker)
            method = "StreamChunk"
        else:
            request = chunks_pb2.CompleteJobRequest(job_id=job_id, worker=worker)  # type: ignore[assignment]
            method = "CompleteJob"
        code = _raw(served, method, request.SerializeToString(), metadata, streaming)
        if not token:
            expected = grpc.StatusCode.UNAUTHENTICATED
        elif job_id < 1 or len(worker) > 200:
            expected = grpc.StatusCode.INVALID_ARGUMENT
        elif streaming and job_id != served.job_id:
            expected = grpc.StatusCode.NOT_FOUND
        else:  # the open chunk's bytes, or a done signal answered "not released"
            expected = grpc.StatusCode.OK
        assert code == expected, (code, job_id, len(worker))

    check()
    _still_serving(served)
    assert served.chunk.path.exists(), "no fuzzed done signal deleted an open chunk"


def test_malformed_bytes_get_invalid_argument_and_the_master_keeps_serving(
    served: Served,
) -> None:
    @FUZZ
    @given(body=st.binary(max_size=2048), streaming=st.booleans())
    def check(body: bytes, streaming: bool) -> None:
        method = "StreamChunk" if streaming else "CompleteJob"
        code = _raw(served, method, body, served.security.metadata, streaming)
        assert code in DELIBERATE | {grpc.StatusCode.OK}, code
        assert code != grpc.StatusCode.UNAUTHENTICATED

    check()
    # Bytes that are no protobuf at all: a field with a wire type that does not exist.
    assert _raw(served, "StreamChunk", b"\x0f\xff", served.security.metadata, True) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # Unknown methods and services: UNIMPLEMENTED, never a crash.
    assert _raw(served, "Nope", b"", served.security.metadata, False) == (
        grpc.StatusCode.UNIMPLEMENTED
    )
    _still_serving(served)
