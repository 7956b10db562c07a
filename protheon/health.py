"""``protheon health``: ask the master's standard gRPC health service, for scripts and probes."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protheon.rpc_auth import RpcSecurity, open_channel


def check(master: str, security: RpcSecurity, timeout: float = 5.0, service: str = "") -> str:
    """The serving status name (``SERVING``, ``NOT_SERVING``...) or ``UNREACHABLE: ...``."""
    with open_channel(master, security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
