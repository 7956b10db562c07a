"""TLS and a shared token between workers and the master.

The master's gRPC port hands out chunk bytes and believes done signals, so on a LAN it must not
answer strangers: TLS (the master proves itself with a certificate from the lab's private CA;
workers hold only the CA's certificate) and a bearer token every call carries, compared in
constant time. A call without the token gets UNAUTHENTICATED. Only the standard health service
answers without the token (still over TLS), so probes need no secret. Plaintext, without either,
only when ``rpc_plaintext`` says so.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from protheon.certs import CA_CERT, MASTER_CERT, MASTER_KEY, TOKEN
from protheon.config import ConfigError, Settings

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"


@dataclasses.dataclass(frozen=True, repr=False)
class RpcSecurity:
    plaintext: bool
    token: str = ""
    ca: bytes = b""
    cert: bytes = b""  # the master's
    key: bytes = b""  # the master's

    @property
    def metadata(self) -> Sequence[tuple[str, str]]:
        """What every call sends."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def load(settings: Settings, master: bool = False) -> RpcSecurity:
    """The files of ``rpc_tls_dir`` (the master also needs its key and certificate)."""
    if settings.rpc_plaintext:
        log.warning("gRPC runs in plaintext without authentication (rpc_plaintext = true)")
        return RpcSecurity(plaintext=True)
    folder = settings.rpc_tls_dir
    token = _read(folder, TOKEN).decode().strip()
    if len(token) < 16:
        raise ConfigError(f"rpc_tls_dir {folder}: the token is too short (16 characters at least)")
    return RpcSecurity(
        plaintext=False,
        token=token,
        ca=_read(folder, CA_CERT),
        cert=_read(folder, MASTER_CERT) if master else b"",
        key=_read(folder, MASTER_KEY) if master else b"",
    )


def _read(folder: Path, name: str) -> bytes:
    try:
        return (folder / name).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"rpc_tls_dir {folder}: cannot read {name} ({exc.strerror}); make the files with"
            f" `protheon certs --dir {folder}`, or set rpc_plaintext = true on a trusted host"
        ) from None


def open_channel(target: str, security: RpcSecurity, options: Sequence[tuple[str, Any]] = ()
                 ) -> grpc.Channel:  # fmt: skip
    if security.plaintext:
        return grpc.insecure_channel(target, options=list(options))
    credentials = grpc.ssl_channel_credentials(root_certificates=security.ca)
    return grpc.secure_channel(target, credentials, options=list(options))


def add_port(server: grpc.Server, listen: str, security: RpcSecurity) -> int:
    if security.plaintext:
        return int(server.add_insecure_port(listen))
    credentials = grpc.ssl_server_credentials([(security.key, security.cert)])
    return int(server.add_secure_port(listen, credentials))


class TokenCheck(grpc.ServerInterceptor):  # type: ignore[misc]
    """Turn away calls without the shared token, before any service code runs."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        given = dict(details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
