"""The real distributed path: master + worker processes, RabbitMQ, gRPC, PostgreSQL.

Truth comes from tests/oracle.py, an independent reading of the source files.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pika
import psycopg

from tests.conftest import AMQP_URL, Processes, drop_database, free_port, wait_for
from tests.oracle import read_expected
from tests.pipeline import (
    all_done,
    assert_database_matches_source,
    blocked_in_lock,
    gen,
    status,
    weapons_lock,
)


def test_master_and_two_workers_load_every_row_exactly_once(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox, staging, workspace = tmp_path / "in", tmp_path / "later", tmp_path / "ws"
    gen(processes, inbox, "--files", "2", "--lines", "3000", "--seed", "7",
         "--dup-rate", "0.05", "--bad-rate", "0.02")  # fmt: skip
    gen(processes, inbox, "--files", "1", "--lines", "2500", "--seed", "8", "--start-id",
         "12000006000", "--dup-rate", "0.05", "--bad-rate", "0.02", "--multi-frame")  # fmt: skip
    # Re-uses seed 7: its PGCRs duplicate those of the first files, across files.
    gen(processes, staging, "--files", "1", "--lines", "3000", "--seed", "7",
         "--dup-rate", "0.05", "--bad-rate", "0.02")  # fmt: skip
    repeated = next(staging.glob("*.zst"))
    repeated.rename(staging / "12100000000-12100003000.jsonl.zst")

    port = free_port()
    master = processes.start("master", "master", "--input", str(inbox), "--workspace",
                             str(workspace), "--listen", f"127.0.0.1:{port}",
                             "--chunk-lines", "700")  # fmt: skip
    workers = [
        processes.start(
            f"worker{i}",
            "worker",
            "--master",
            f"127.0.0.1:{port}",
            "--concurrency",
            "1",
            "--worker-name",
            f"w{i}",
        )
        for i in (1, 2)
    ]
    wait_for(lambda: all_done(processes, 3), 90, "the first three files to load")
    # A file that appears while the master runs is picked up too (copied, then renamed in).
    shutil.copy(staging / "12100000000-12100003000.jsonl.zst", inbox / ".incoming.part")
    (inbox / ".incoming.part").rename(inbox / "12100000000-12100003000.jsonl.zst")
    status = wait_for(lambda: all_done(processes, 4), 90, "the late file to load")
    assert isinstance(status, dict)

    sources = sorted(inbox.glob("*.zst"))
    assert_database_matches_source(pg_dsn, sources)
    assert status["jobs_done"] == status["jobs_total"] and status["jobs_failed"] == 0
    expected = read_expected(sources)
    assert status["pgcrs_written"] == len(expected.instances)
    assert status["rejects"] == len(expected.rejects)
    wait_for(lambda: not any((workspace / "chunks").iterdir()), 10, "an empty workspace")
    with psycopg.connect(pg_dsn) as conn:
        by_worker = dict(conn.execute("SELECT worker, count(*) FROM protheon.jobs GROUP BY 1"))
    assert set(by_worker) == {"w1", "w2"}, "both workers took jobs"

    for process in (*workers, master):
        process.send_signal(signal.SIGTERM)
    assert [process.wait(timeout=30) for process in (*workers, master)] == [0, 0, 0]


def test_worker_killed_mid_job_loses_and_duplicates_nothing(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox, workspace = tmp_path / "in", tmp_path / "ws"
    gen(processes, inbox, "--files", "2", "--lines", "2000", "--seed", "11",
         "--dup-rate", "0.05", "--bad-rate", "0.01")  # fmt: skip
    port = free_port()
    processes.start("master", "master", "--input", str(inbox), "--workspace", str(workspace),
                    "--listen", f"127.0.0.1:{port}", "--chunk-lines", "1000")  # fmt: skip

    with weapons_lock(pg_dsn):
        doomed = processes.start("doomed", "worker", "--master", f"127.0.0.1:{port}",
                                 "--concurrency", "1", "--worker-name", "doomed")  # fmt: skip
        killed_job = blocked_in_lock(pg_dsn, "doomed")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)

    processes.start("survivor", "worker", "--master", f"127.0.0.1:{port}",
                    "--concurrency", "1", "--worker-name", "survivor")  # fmt: skip
    wait_for(lambda: all_done(processes, 2), 90, "all files to load after the kill")
    assert_database_matches_source(pg_dsn, sorted(inbox.glob("*.zst")))
    with psycopg.connect(pg_dsn) as conn:
        attempts, worker = conn.execute(
            "SELECT attempts, worker FROM protheon.jobs WHERE job_id = %s", (killed_job,)
        ).fetchone() or (0, "")
    assert attempts >= 2 and worker == "survivor", "the killed job was redelivered and redone"


def test_workers_wait_out_a_master_restart(
    processes: Processes, pg_dsn: str, queue: str, tmp_path: Path
) -> None:
    """Jobs queued, master gone: workers wait for it (no delivery burnt), then finish the load."""
    inbox, workspace = tmp_path / "in", tmp_path / "ws"
    gen(processes, inbox, "--files", "1", "--lines", "3000", "--seed", "5", "--bad-rate", "0.01")
    port = free_port()
    master_args = ("master", "--input", str(inbox), "--workspace", str(workspace),
                   "--listen", f"127.0.0.1:{port}", "--chunk-lines", "500")  # fmt: skip
    master = processes.start("master", *master_args)
    with psycopg.connect(pg_dsn, autocommit=True) as watch:
        wait_for(
            lambda: watch.execute("SELECT 1 FROM protheon.files WHERE status = 'split'").fetchone(),
            60,
            "the master to split the file",
        )
    master.send_signal(signal.SIGKILL)
    master.wait(timeout=10)

    processes.start("worker", "worker", "--master", f"127.0.0.1:{port}", "--concurrency", "1")
    wait_for(lambda: "UNAVAILABLE" in processes.log("worker"), 30, "the worker to find no master")
    processes.start("master2", *master_args)
    wait_for(lambda: all_done(processes, 1), 90, "the load to finish after the restart")
    assert_database_matches_source(pg_dsn, sorted(inbox.glob("*.zst")))
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT max(attempts) FROM protheon.jobs").fetchone() == (1,)
    assert status(processes)["jobs_failed"] == 0
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    dead = connection.channel().queue_declare(f"{queue}.dead", passive=True)
    connection.close()
    assert dead.method.message_count == 0, "no job was dead-lettered while the master was down"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """What `make demo` runs, on a smaller sample, in its own database and queue."""
    database, queue = (
        f"protheon_demo_{uuid.uuid4().hex[:8]}",
        f"protheon.demo.{uuid.uuid4().hex[:8]}",
    )
    command = [sys.executable, "-m", "protheon.demo", "--dir", str(tmp_path / "demo"),
               "--files", "2", "--lines", "6000", "--port", str(free_port()),
               "--database", database, "--queue", queue, "--timeout", "120"]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        drop_database(database)
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        for name in (queue, f"{queue}.dead"):
            connection.channel().queue_delete(name)
        connection.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"files +\[#{30}\] 2/2 done", result.stdout)
    written = re.search(r"PGCRs\s+([\d,]+) written", result.stdout)
    assert written and int(written.group(1).replace(",", "")) > 10_000


def _scrape(port: int, metric: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
    raise AssertionError(f"{metric} not served on port {port}")


def test_worker_pool_runs_processes_and_drains_them_on_sigterm(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox, workspace = tmp_path / "in", tmp_path / "ws"
    gen(processes, inbox, "--files", "1", "--lines", "4000", "--seed", "21")
    port = free_port()
    processes.start("master", "master", "--input", str(inbox), "--workspace", str(workspace),
                    "--listen", f"127.0.0.1:{port}", "--chunk-lines", "500")  # fmt: skip
    metrics_port = free_port()
    pool = processes.start("pool", "worker", "--master", f"127.0.0.1:{port}",
                           "--concurrency", "2", "--worker-name", "pool",
                           "--metrics-port", str(metrics_port))  # fmt: skip
    wait_for(lambda: all_done(processes, 1), 90, "the pool to load the file")
    # Each process serves its own metrics (port, port + 1); together they count every job.
    done = [_scrape(metrics_port + offset, "protheon_jobs_done_total") for offset in (0, 1)]
    assert all(count > 0 for count in done) and sum(done) == 8
    with psycopg.connect(pg_dsn) as conn:
        names = {row[0] for row in conn.execute("SELECT DISTINCT worker FROM protheon.jobs")}
    assert names == {"pool/1", "pool/2"}, "both child processes took jobs"
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=30) == 0
    assert processes.log("pool").count("stopped after") == 2
