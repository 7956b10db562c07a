"""``make demo``: generate a sample, run a master and two workers locally, print the result.

Uses its own database (``protheon_demo``) and queue (``protheon.demo``), which it resets on
every run (``--database``/``--queue`` choose others), so it never touches a real load.
RabbitMQ and PostgreSQL must be running locally (override with PROTHEON_AMQP_URL and
PROTHEON_DEMO_ADMIN_DSN).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from protheon import broker, db, status
from protheon.certs import make_certs
from protheon.config import Settings


def _reset(admin_dsn: str, amqp_url: str, database: str, queue: str) -> str:
    """Drop and recreate the demo database, migrate it, and delete the demo queues."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        name = sql.Identifier(database)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    dsn = db.with_database(admin_dsn, database)
    db.migrate(dsn)
    connection = broker.connect(amqp_url, "protheon-demo")
    channel = connection.channel()
    for queue_name in (queue, broker.dead_letter_queue(queue)):
        channel.queue_delete(queue_name)
    connection.close()
    return dsn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo"))
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=50551)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--database", default="protheon_demo", help="dropped and recreated!")
    parser.add_argument("--queue", default="protheon.demo", help="purged")
    args = parser.parse_args(argv)

    admin_dsn = os.environ.get("PROTHEON_DEMO_ADMIN_DSN", "postgresql:///postgres")
    amqp_url = os.environ.get("PROTHEON_AMQP_URL", Settings.amqp_url)
    try:
        dsn = _reset(admin_dsn, amqp_url, args.database, args.queue)
    except (psycopg.Error, OSError, Exception) as exc:
        print(
            f"demo: cannot prepare PostgreSQL/RabbitMQ ({exc}). Are both running?", file=sys.stderr
        )
        return 1
    env = {**os.environ, "PROTHEON_PG_DSN": dsn, "PROTHEON_AMQP_URL": amqp_url,
           "PROTHEON_QUEUE": args.queue}  # fmt: skip
    protheon = [sys.executable, "-m", "protheon"]
    shutil.rmtree(args.dir, ignore_errors=True)
    inbox, workspace, logs = args.dir / "input", args.dir / "workspace", args.dir / "logs"
    logs.mkdir(parents=True)

    print(f"generating {args.files} files x {args.lines:,} PGCRs into {inbox} ...")
    subprocess.run(
        [*protheon, "gen", "--out", str(inbox), "--files", str(args.files), "--lines",
         str(args.lines), "--dup-rate", "0.02", "--bad-rate", "0.001"],
        env=env, check=True,
    )  # fmt: skip
    make_certs(args.dir / "tls")  # master and workers talk TLS with a token, as deployed
    env["PROTHEON_RPC_TLS_DIR"] = str(args.dir / "tls")
    listen = f"127.0.0.1:{args.port}"
    commands = {
        "master": ["master", "--input", str(inbox), "--workspace", str(workspace),
                   "--listen", listen, "--chunk-lines", "5000"],
        "worker-1": ["worker", "--master", listen, "--concurrency", "1", "--worker-name", "demo-1",
                     "--worker-index", "1"],
        "worker-2": ["worker", "--master", listen, "--concurrency", "1", "--worker-name", "demo-2",
                     "--worker-index", "2"],
    }  # fmt: skip
    processes = {
        name: subprocess.Popen(
            [*protheon, *command],
            env=env,
            stdout=(logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name, command in commands.items()
    }
    print(f"running a master and two workers (logs in {logs}) ...")
    started = time.monotonic()
    code = 1
    try:
        while time.monotonic() - started < args.timeout:
            time.sleep(1)
            values = status.summary(dsn)
            print(
                f"  {time.monotonic() - started:5.1f}s  files {values['files_done']}/"
                f"{values['files_total']}  jobs {values['jobs_done']}/{values['jobs_total']}"
                f"  PGCRs {values['pgcrs_written']:,}"
            )
            dead = [name for name, process in processes.items() if process.poll() is not None]
            if dead:
                print(f"demo: {', '.join(dead)} exited early; see {logs}", file=sys.stderr)
                break
            if values["files_total"] == args.files and values["files_done"] == args.files:
                code = 0
                break
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=60)
    elapsed = time.monotonic() - started
    values = status.summary(dsn)
    print()
    print(status.render(values))
    print(f"\nloaded in {elapsed:.1f}s: {values['pgcrs_written'] / elapsed:,.0f} PGCRs/s "
          f"with 2 worker processes")  # fmt: skip
    print(f"explore it: psql {args.database} -c 'SELECT count(*) FROM pgcr.entries'")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
