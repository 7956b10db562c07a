"""Fixtures that give each test its own real database and queue, and run real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import psycopg
import pytest
from psycopg import sql

from protheon import db
from protheon.certs import make_certs

pytest_plugins = ("tests.chunk_service",)  # the served chunk service fixture

ADMIN_DSN = os.environ.get("PROTHEON_TEST_ADMIN_DSN", "postgresql:///postgres")
AMQP_URL = os.environ.get("PROTHEON_TEST_AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def dsn_for(name: str) -> str:
    """The admin DSN pointed at another database."""
    return db.with_database(ADMIN_DSN, name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A migrated database that each test's database is cloned from (fast: a file copy)."""
    name = f"protheon_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db.migrate(dsn_for(name))
    yield name
    drop_database(name)


@pytest.fixture
def pg_dsn(template_db: str) -> Iterator[str]:
    name = f"protheon_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield dsn_for(name)
    drop_database(name)


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"protheon.test.{uuid.uuid4().hex[:10]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue_name in (name, f"{name}.dead"):
        channel.queue_delete(queue_name)
    connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_protheon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "protheon", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


class Processes:
    """Real ``protheon`` processes with their logs in files; all are killed at teardown."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:  # fmt: skip
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "protheon", *args],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(process)
        return process

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_protheon(*args, env=self.env)
        if check and result.returncode != 0:
            pytest.fail(f"protheon {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def rpc_tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private CA, master certificate and token for the whole session (TLS everywhere)."""
    folder = tmp_path_factory.mktemp("tls")
    make_certs(folder)
    return folder


@pytest.fixture
def protheon_env(pg_dsn: str, queue: str, rpc_tls_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PROTHEON_RPC_TLS_DIR": str(rpc_tls_dir),
        "PROTHEON_PG_DSN": pg_dsn,
        "PROTHEON_AMQP_URL": AMQP_URL,
        "PROTHEON_QUEUE": queue,
        "PROTHEON_SETTLE_SECONDS": "0.3",
        "PROTHEON_SCAN_INTERVAL": "0.2",
        # Off unless a test asks: parallel processes would fight over the default ports.
        "PROTHEON_MASTER_METRICS_PORT": "0",
        "PROTHEON_WORKER_METRICS_PORT": "0",
    }


@pytest.fixture
def processes(protheon_env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Processes(protheon_env, log_dir)
    yield procs
    procs.stop_all()


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2) -> object:  # fmt: skip
    """Poll until ``condition()`` is truthy; fail the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class NotifySocket:
    """A real NOTIFY_SOCKET: an AF_UNIX datagram socket collecting what a service sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.2)
        self._open = True
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while self._open:
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def env(self, watchdog_seconds: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_seconds is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_seconds * 1_000_000))
        return env

    def fields(self, key: str, since: float = 0.0) -> list[tuple[float, str]]:
        """(time, value) of every ``KEY=value`` received after ``since``."""
        found = []
        for at, message in list(self.messages):
            for line in message.splitlines():
                name, _, value = line.partition("=")
                if name == key and at >= since:
                    found.append((at, value))
        return found

    def close(self) -> None:
        self._open = False
        self._socket.close()
        self._thread.join(timeout=2)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()
