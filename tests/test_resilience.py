"""Dependencies restarting under a running load, and the master killed mid-file.

These restart the real local RabbitMQ and PostgreSQL, as an operator's reboot would.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pika
import psycopg

from tests.conftest import AMQP_URL, Processes, free_port, wait_for
from tests.pipeline import (
    all_done,
    assert_database_matches_source,
    gen,
    status,
    wait_blocked,
    weapons_lock,
)
from tests.services import restart_postgresql, restart_rabbitmq_app


def _dead_letters(queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    count = connection.channel().queue_declare(f"{queue}.dead", passive=True)
    connection.close()
    return int(count.method.message_count)


def test_rabbitmq_and_postgresql_restart_during_a_load(
    processes: Processes, pg_dsn: str, queue: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    gen(processes, inbox, "--files", "2", "--lines", "5000", "--seed", "41",
        "--dup-rate", "0.03", "--bad-rate", "0.01")  # fmt: skip
    port = free_port()
    processes.start("master", "master", "--input", str(inbox), "--workspace",
                    str(tmp_path / "ws"), "--listen", f"127.0.0.1:{port}",
                    "--chunk-lines", "200")  # fmt: skip
    for name in ("a", "b"):
        processes.start(name, "worker", "--master", f"127.0.0.1:{port}", "--concurrency", "1",
                        "--worker-name", name)  # fmt: skip
    wait_for(lambda: status(processes)["jobs_done"] >= 2, 60, "the first jobs")
    assert status(processes)["jobs_done"] < 40, "the run must still be going"

    # Both workers stopped mid-transaction (or waiting for one: after a broker restart a job
    # can be redelivered while its first worker still holds it) while the broker goes away.
    with weapons_lock(pg_dsn):
        wait_blocked(pg_dsn, "a")
        wait_blocked(pg_dsn, "b")
        restart_rabbitmq_app()
    # At once again (50 jobs: some are left) while PostgreSQL restarts, killing their open
    # transactions and the master's connections.
    with weapons_lock(pg_dsn):
        wait_blocked(pg_dsn, "a")
        wait_blocked(pg_dsn, "b")
        restart_postgresql()
    wait_for(lambda: all_done(processes, 2), 120, "the load to finish after both restarts")

    assert_database_matches_source(pg_dsn, sorted(inbox.glob("*.zst")))
    assert status(processes)["jobs_failed"] == 0
    assert _dead_letters(queue) == 0
    for name in ("master", "a", "b"):
        assert "Traceback" not in processes.log(name), processes.log(name)[-3000:]


def test_master_killed_mid_file_resumes_without_publishing_twice(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox, workspace = tmp_path / "in", tmp_path / "ws"
    gen(processes, inbox, "--files", "2", "--lines", "3000", "--seed", "42", "--dup-rate",
        "0.02", "--bad-rate", "0.01")  # fmt: skip
    port = free_port()
    master_args = ("master", "--input", str(inbox), "--workspace", str(workspace),
                   "--listen", f"127.0.0.1:{port}", "--chunk-lines", "300",
                   "--max-ready-chunks", "4")  # fmt: skip
    first = processes.start("master1", *master_args)
    # No workers yet: the master cuts four chunks, then waits for room, mid-file.
    wait_for(lambda: status(processes)["jobs_total"] == 4, 60, "four chunks cut")
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT status, lines_split FROM protheon.files").fetchall() == [
            ("splitting", 1200)
        ]

    second = processes.start("master2", *master_args)
    for name in ("a", "b"):
        processes.start(name, "worker", "--master", f"127.0.0.1:{port}", "--concurrency", "1",
                        "--worker-name", name)  # fmt: skip
    wait_for(lambda: status(processes)["jobs_done"] >= 8, 60, "work after the restart")
    second.send_signal(signal.SIGKILL)  # again, now with workers busy
    second.wait(timeout=10)
    processes.start("master3", *master_args)
    wait_for(lambda: all_done(processes, 2), 120, "the load to finish")

    assert_database_matches_source(pg_dsn, sorted(inbox.glob("*.zst")))
    with psycopg.connect(pg_dsn) as conn:
        per_file = conn.execute(
            "SELECT f.lines_total, sum(j.line_count), count(*), max(j.seq) + 1"
            " FROM protheon.jobs j JOIN protheon.files f USING (file_id) GROUP BY f.file_id"
        ).fetchall()
    assert per_file == [(3000, 3000, 10, 10), (3000, 3000, 10, 10)], "contiguous, no gap"
    worker_logs = processes.log("a") + processes.log("b")
    assert "already done" not in worker_logs, "a job was published twice"
    assert not any((workspace / "chunks").iterdir())
