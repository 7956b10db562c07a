"""Settings: command-line flags, then environment (``PROTHEON_*``), then a TOML file, then defaults.

One dataclass holds every knob so that the CLI, the systemd units (``EnvironmentFile=``) and the
Ansible templates (a TOML file) all speak the same names: the TOML key ``chunk_lines`` is the
environment variable ``PROTHEON_CHUNK_LINES`` and the flag ``--chunk-lines``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "PROTHEON_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting and its source."""


def _default_concurrency() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True)
class Settings:
    # Connections
    pg_dsn: str = "postgresql:///protheon"
    amqp_url: str = "amqp://guest:guest@localhost:5672/%2F"
    queue: str = "protheon.jobs"
    # Master
    input: Path = Path("input")
    workspace: Path = Path("workspace")
    listen: str = "127.0.0.1:50051"
    chunk_lines: int = 50_000
    chunk_level: int = 3
    settle_seconds: float = 1.0
    scan_interval: float = 0.5
    max_ready_chunks: int = 64
    rpc_piece_bytes: int = 1 << 20
    delivery_limit: int = 5
    # gRPC between master and workers: TLS + shared token from this folder (``protheon certs``)
    rpc_tls_dir: Path = Path("tls")
    rpc_plaintext: bool = False  # no TLS, no token: only on a host nobody else can reach
    master: str = "localhost:50051"
    concurrency: int = dataclasses.field(default_factory=_default_concurrency)
    prefetch: int = 1
    drain_seconds: float = 60.0  # keep below the unit's TimeoutStopSec
    worker_name: str = dataclasses.field(default_factory=_default_worker_name)
    worker_index: int = 1  # this process among a host's workers: names it, offsets its port
    # Both
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"  # deployments set the LAN address Prometheus scrapes
    master_metrics_port: int = 9400  # 0 turns the endpoint off
    worker_metrics_port: int = 9410  # the first worker's; worker N listens on this + N - 1

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    """Turn a TOML/env/flag value into the field's type; errors say where the value came from."""
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in {"1", "true", "yes", "on"}:
                    return True
                if value.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is Path:
            return Path(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} from {source}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the four layers; ``flags`` values of None mean "not given on the command line"."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    if config_file is not None:
        try:
            with config_file.open("rb") as fh:
                table = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        table = table.get("protheon", table)
        for key, value in table.items():
            if key not in names:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[key] = _coerce(key, hints[key], value, str(config_file))
            sources[key] = str(config_file)

    for name in names:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None and env_value != "":
            values[name] = _coerce(name, hints[name], env_value, ENV_PREFIX + name.upper())
            sources[name] = ENV_PREFIX + name.upper()

    for name, value in (flags or {}).items():
        if value is not None and name in names:
            values[name] = _coerce(name, hints[name], value, f"--{name.replace('_', '-')}")
            sources[name] = f"--{name.replace('_', '-')}"

    settings = Settings(**values)
    _validate(settings, sources)
    return settings


def _validate(settings: Settings, sources: Mapping[str, str]) -> None:
    def fail(name: str, rule: str) -> ConfigError:
        where = sources.get(name, "the default")
        return ConfigError(f"{name} {rule}, got {getattr(settings, name)!r} from {where}")

    positive = ("chunk_lines", "max_ready_chunks", "rpc_piece_bytes", "concurrency", "prefetch")
    for name in positive:
        if getattr(settings, name) < 1:
            raise fail(name, "must be at least 1")
    if settings.rpc_piece_bytes > 3 << 20:
        raise fail("rpc_piece_bytes", "must stay under gRPC's 4 MiB message limit (3 MiB max)")
    if not 1 <= settings.chunk_level <= 22:
        raise fail("chunk_level", "must be a zstd level between 1 and 22")
