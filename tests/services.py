"""Restart the real RabbitMQ and PostgreSQL of this machine (resilience tests, chaos run)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pika
import pika.exceptions

AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"


def rabbitmq_up(url: str = AMQP_URL) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError:
        return False
    return True


def _wait(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def restart_rabbitmq_app() -> None:
    """Stop and start the broker application: every connection drops, queues come back."""
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    _wait(rabbitmq_up, 60, "RabbitMQ to accept connections again")


def restart_rabbitmq_node() -> None:
    """Shut the whole node down (Erlang VM included) and start it again, as a reboot would."""
    subprocess.run(["rabbitmqctl", "-q", "shutdown"], check=True, timeout=180)
    subprocess.run(["rabbitmq-server", "-detached"], check=True, timeout=60)
    # -detached returns before the node has registered: await_startup would fail at once.
    _wait(rabbitmq_up, 180, "the RabbitMQ node to boot and accept connections")


def restart_postgresql() -> None:
    """A fast restart: sessions are cut, open transactions roll back."""
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True, timeout=120,
    )  # fmt: skip
