"""Running as a service: sd_notify, watchdog, drain on SIGTERM, abort, poison jobs, health.

Real processes, a real NOTIFY_SOCKET, real signals; a job is stopped mid-transaction by a lock
the test holds (tests/pipeline.py), which is also how a hung database call looks.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pika
import psycopg

from tests.conftest import AMQP_URL, NotifySocket, Processes, free_port, wait_for
from tests.pipeline import (
    all_done,
    assert_database_matches_source,
    blocked_in_lock,
    gen,
    status,
    weapons_lock,
)


def _master(processes: Processes, tmp_path: Path, port: int, *extra: str, name: str = "master",
            env: dict[str, str] | None = None) -> object:  # fmt: skip
    return processes.start(
        name, "master", "--input", str(tmp_path / "in"), "--workspace", str(tmp_path / "ws"),
        "--listen", f"127.0.0.1:{port}", "--chunk-lines", "500", *extra, extra_env=env,
    )  # fmt: skip


def _worker(processes: Processes, port: int, name: str,
            env: dict[str, str] | None = None) -> object:  # fmt: skip
    return processes.start(name, "worker", "--master", f"127.0.0.1:{port}", "--concurrency",
                           "1", "--worker-name", name, extra_env=env)  # fmt: skip


def test_worker_notifies_and_its_watchdog_pings_stop_while_it_is_stalled(
    processes: Processes, pg_dsn: str, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    gen(processes, tmp_path / "in", "--files", "1", "--lines", "2000", "--seed", "31")
    port = free_port()
    _master(processes, tmp_path, port)
    with weapons_lock(pg_dsn):
        worker = _worker(processes, port, "watched", notify_socket.env(watchdog_seconds=1.0))
        blocked_in_lock(pg_dsn, "watched")
        assert notify_socket.fields("READY") == [(notify_socket.fields("READY")[0][0], "1")]
        stalled_at = time.monotonic()
        time.sleep(2.5)  # pings every 0.5 s while progressing; none now
        assert notify_socket.fields("WATCHDOG", since=stalled_at + 0.6) == []
        statuses = [value for _, value in notify_socket.fields("STATUS")]
        assert any(value.startswith("job ") for value in statuses), statuses
    resumed_at = time.monotonic()
    wait_for(lambda: notify_socket.fields("WATCHDOG", since=resumed_at), 10, "pings to resume")
    wait_for(lambda: all_done(processes, 1), 60, "the load to finish")
    assert worker.send_signal(signal.SIGTERM) is None  # type: ignore[attr-defined]
    assert worker.wait(timeout=30) == 0  # type: ignore[attr-defined]
    assert notify_socket.fields("STOPPING")


def test_sigterm_mid_job_finishes_the_job_then_exits_0(
    processes: Processes, pg_dsn: str, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    gen(processes, tmp_path / "in", "--files", "1", "--lines", "2000", "--seed", "32",
        "--bad-rate", "0.01", "--dup-rate", "0.02")  # fmt: skip
    port = free_port()
    _master(processes, tmp_path, port)
    with weapons_lock(pg_dsn):
        worker = _worker(processes, port, "draining", notify_socket.env())
        job_id = blocked_in_lock(pg_dsn, "draining")
        worker.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        wait_for(lambda: notify_socket.fields("STOPPING"), 10, "STOPPING=1")
        assert worker.poll() is None  # type: ignore[attr-defined]
    assert worker.wait(timeout=30) == 0  # type: ignore[attr-defined]
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT status, worker, attempts FROM protheon.jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
        taken = conn.execute("SELECT count(*) FROM protheon.jobs WHERE worker = 'draining'")
        assert taken.fetchone() == (1,), "no new job was taken while draining"
    assert row == ("done", "draining", 1), "the job in hand was finished by the draining worker"
    assert "stopped after 1 jobs" in processes.log("draining")
    _worker(processes, port, "finisher")
    wait_for(lambda: all_done(processes, 1), 60, "the rest of the load")
    assert_database_matches_source(pg_dsn, sorted((tmp_path / "in").glob("*.zst")))


def test_second_sigterm_leaves_at_once_and_the_job_is_redone_elsewhere(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    gen(processes, tmp_path / "in", "--files", "1", "--lines", "1500", "--seed", "33")
    port = free_port()
    _master(processes, tmp_path, port)
    with weapons_lock(pg_dsn):
        worker = _worker(processes, port, "impatient")
        job_id = blocked_in_lock(pg_dsn, "impatient")
        worker.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        time.sleep(0.3)
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        assert worker.wait(timeout=10) != 0  # type: ignore[attr-defined]
        assert time.monotonic() - sent < 3, "left promptly, without waiting for the job"
    _worker(processes, port, "second")
    wait_for(lambda: all_done(processes, 1), 60, "the load to finish elsewhere")
    assert_database_matches_source(pg_dsn, sorted((tmp_path / "in").glob("*.zst")))
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT worker, attempts FROM protheon.jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert row == ("second", 2)


def test_drain_deadline_requeues_the_job_and_exits_nonzero(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    gen(processes, tmp_path / "in", "--files", "1", "--lines", "1000", "--seed", "34")
    port = free_port()
    _master(processes, tmp_path, port)
    with weapons_lock(pg_dsn):
        worker = _worker(processes, port, "slow", {"PROTHEON_DRAIN_SECONDS": "1.5"})
        blocked_in_lock(pg_dsn, "slow")
        worker.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        assert worker.wait(timeout=10) == 1  # type: ignore[attr-defined]
        assert "drain deadline passed" in processes.log("slow")
    _worker(processes, port, "next")
    wait_for(lambda: all_done(processes, 1), 60, "the load to finish")
    assert_database_matches_source(pg_dsn, sorted((tmp_path / "in").glob("*.zst")))


def test_master_notifies_serves_health_and_drains(
    processes: Processes, pg_dsn: str, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    (tmp_path / "in").mkdir()
    port = free_port()
    master = _master(processes, tmp_path, port, env=notify_socket.env(watchdog_seconds=1.0))
    wait_for(lambda: notify_socket.fields("READY"), 30, "READY=1")
    health = processes.run("health", "--master", f"127.0.0.1:{port}", check=False)
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    ready_at = time.monotonic()
    wait_for(lambda: len(notify_socket.fields("WATCHDOG", since=ready_at)) >= 3, 10, "pings")
    assert any("watching" in value for _, value in notify_socket.fields("STATUS"))
    master.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    assert master.wait(timeout=30) == 0  # type: ignore[attr-defined]
    assert notify_socket.fields("STOPPING")
    gone = processes.run("health", "--master", f"127.0.0.1:{port}", "--timeout", "1", check=False)
    assert gone.returncode == 1 and gone.stdout.startswith("UNREACHABLE")


def test_poison_job_is_dead_lettered_marked_failed_and_retried(
    processes: Processes, pg_dsn: str, queue: str, tmp_path: Path
) -> None:
    gen(processes, tmp_path / "in", "--files", "1", "--lines", "1500", "--seed", "35")
    port = free_port()
    env = {"PROTHEON_DELIVERY_LIMIT": "2"}
    _master(processes, tmp_path, port, env=env)
    wait_for(lambda: status(processes)["jobs_total"] == 3, 30, "three jobs")
    # Damage one chunk so that every attempt at it fails the same way.
    chunk = tmp_path / "ws" / "chunks" / "1-1.zst"
    good = chunk.read_bytes()
    chunk.write_bytes(bytes(byte ^ 0x5A for byte in good))
    _worker(processes, port, "w", env)
    wait_for(lambda: status(processes)["jobs_done"] == 2, 60, "the two good jobs")
    wait_for(lambda: status(processes)["jobs_failed"] == 1, 60, "the poison job to fail")
    listing = processes.run("jobs", "list", "--failed").stdout
    assert "failed" in listing and "CorruptInput" in listing, listing
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    dead = connection.channel().queue_declare(f"{queue}.dead", passive=True)
    assert dead.method.message_count == 1
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT attempts FROM protheon.jobs WHERE seq = 1").fetchone() == (3,)

    chunk.write_bytes(good)  # the operator fixed the cause
    retried = processes.run("jobs", "retry", "--failed").stdout
    assert "published again" in retried
    wait_for(lambda: all_done(processes, 1), 60, "the retried job")
    dead = connection.channel().queue_declare(f"{queue}.dead", passive=True)
    connection.close()
    assert dead.method.message_count == 0
    assert_database_matches_source(pg_dsn, sorted((tmp_path / "in").glob("*.zst")))
