"""``protheon health``: ask the master's standard gRPC health service, for scripts and probes."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(master: str, timeout: float = 5.0, service: str = "") -> str:
    """The serving status name (``SERVING``, ``NOT_SERVING``...) or ``UNREACHABLE: ...``."""
    with grpc.insecure_channel(master) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
