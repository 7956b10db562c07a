"""Protheon's chaos run: a real load while processes die and dependencies restart.

    python bench/chaos.py [--files 4] [--lines 50000] [--workers 2] [--kill-every 10]

Master + K workers load generated PGCRs (with duplicates and malformed lines) while a driver
SIGKILLs a random worker every ``--kill-every`` seconds (and starts it again), SIGKILLs the
master once (and starts it again), restarts the RabbitMQ node once and PostgreSQL once. Then
the database is compared with an independent reading of the source files (tests/oracle.py,
stdlib json) and the figures are printed. Exit status 0 only if nothing was lost or
duplicated and every expected reject was recorded.

It restarts this machine's RabbitMQ and PostgreSQL: run it where nothing else needs them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import fresh_database  # noqa: E402
from protheon import status  # noqa: E402
from protheon.certs import make_certs  # noqa: E402
from protheon.pgcr.generator import GeneratorOptions, generate  # noqa: E402
from tests.oracle import Expected, read_expected  # noqa: E402
from tests.services import restart_postgresql, restart_rabbitmq_node  # noqa: E402

AMQP_URL = os.environ.get("PROTHEON_AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


class Cast:
    """The master and the workers, each restartable under the same name."""

    def __init__(self, env: dict[str, str], logs: Path, master: list[str], workers: int) -> None:
        self.env, self.logs = env, logs
        self.commands = {"master": master}
        for index in range(1, workers + 1):
            self.commands[f"worker-{index}"] = [
                "worker", "--master", master[master.index("--listen") + 1], "--concurrency", "1",
                "--worker-name", f"chaos-{index}", "--worker-index", str(index),
            ]  # fmt: skip
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: dict[str, int] = dict.fromkeys(self.commands, 0)

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "protheon", *self.commands[name]],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self, name: str) -> None:
        process = self.running[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        self.kills[name] += 1
        self.start(name)

    def stop_all(self) -> None:
        """Drain everyone (SIGTERM), then make sure: nothing outlives the run."""
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def crashed(self) -> list[str]:
        """Processes that exited on their own (nothing here should)."""
        return [name for name, process in self.running.items() if process.poll() is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-lines", type=int, default=5_000)
    parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--multi-frame", action="store_true", help="pzstd-style inputs")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "work")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    data = args.dir / f"chaos-{args.files}x{args.lines}{'-mf' if args.multi_frame else ''}"
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {args.files} x {args.lines:,} PGCRs into {data} ...", flush=True)
        generate(GeneratorOptions(out=data, files=args.files, lines=args.lines, seed=args.seed,
                                  dup_rate=0.02, bad_rate=0.001,
                                  multi_frame=args.multi_frame))  # fmt: skip
        (data / ".complete").touch()
    sources = sorted(data.glob("*.jsonl.zst"))
    print("reading the sources independently (stdlib json) ...", flush=True)
    expected = read_expected(sources)

    work = args.dir / "chaos-run"
    shutil.rmtree(work, ignore_errors=True)
    inbox, logs = work / "input", work / "logs"
    inbox.mkdir(parents=True)
    logs.mkdir()
    make_certs(work / "tls")
    with fresh_database() as dsn:
        env = {
            **os.environ, "PROTHEON_PG_DSN": dsn, "PROTHEON_AMQP_URL": AMQP_URL,
            "PROTHEON_QUEUE": f"protheon.chaos.{uuid.uuid4().hex[:8]}",
            "PROTHEON_RPC_TLS_DIR": str(work / "tls"), "PROTHEON_SETTLE_SECONDS": "0.5",
            "PROTHEON_MASTER_METRICS_PORT": "0", "PROTHEON_WORKER_METRICS_PORT": "0",
        }  # fmt: skip
        master = [
            "master", "--input", str(inbox), "--workspace", str(work / "workspace"),
            "--listen", f"127.0.0.1:{_free_port()}", "--chunk-lines", str(args.chunk_lines),
        ]  # fmt: skip
        cast = Cast(env, logs, master, args.workers)
        try:
            for name in cast.commands:
                cast.start(name)
            started = time.monotonic()
            for path in sources:
                shutil.copy2(path, inbox / f".{path.name}.part")
                os.replace(inbox / f".{path.name}.part", inbox / path.name)
            events = _drive(cast, dsn, rng, args.kill_every, len(sources),
                            started + args.timeout)  # fmt: skip
            wall = time.monotonic() - started
            crashed = cast.crashed()
        finally:
            cast.stop_all()
        return _report(dsn, expected, sources, cast, events, wall, crashed)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _drive(cast: Cast, dsn: str, rng: random.Random, kill_every: float, files: int,
           deadline: float) -> list[tuple[float, str]]:  # fmt: skip
    """Kill and restart until the load is done; the one-off faults fire as progress passes
    25% (master), 45% (RabbitMQ) and 65% (PostgreSQL)."""
    once: list[tuple[float, str, Callable[[], None]]] = [
        (0.25, "SIGKILL master", lambda: cast.kill("master")),
        (0.45, "restart RabbitMQ node", restart_rabbitmq_node),
        (0.65, "restart PostgreSQL", restart_postgresql),
    ]
    events: list[tuple[float, str]] = []
    started = time.monotonic()

    def note(what: str) -> None:
        events.append((time.monotonic() - started, what))
        print(f"{events[-1][0]:6.1f}s {what}", flush=True)

    next_kill = started + kill_every
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            values = status.summary(dsn)
        except psycopg.Error:
            continue  # PostgreSQL is restarting
        if values["files_total"] == files and _finished(dsn):
            for _, what, _ in once:
                note(f"SKIPPED {what} (the load finished first)")
            return events
        if once and values["progress"] >= once[0][0]:
            _, what, fault = once.pop(0)
            note(what)
            fault()
        if time.monotonic() >= next_kill:
            victim = rng.choice([name for name in cast.commands if name != "master"])
            note(f"SIGKILL {victim}")
            cast.kill(victim)
            next_kill = time.monotonic() + kill_every
    note("TIMEOUT")
    return events


def _finished(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM protheon.files WHERE status NOT IN ('done', 'failed')),"
            " (SELECT count(*) FROM protheon.jobs WHERE status <> 'done')"
        ).fetchone()
    return row is not None and row == (0, 0)


def _report(dsn: str, expected: Expected, sources: list[Path], cast: Cast,
            events: list[tuple[float, str]],
            wall: float, crashed: list[str]) -> int:  # fmt: skip
    with psycopg.connect(dsn) as conn:

        def rows(query: str) -> list[tuple[object, ...]]:
            return conn.execute(query).fetchall()

        instances = [row[0] for row in rows("SELECT instance_id FROM pgcr.instances")]
        entries = rows("SELECT instance_id, character_id FROM pgcr.entries")
        weapons = rows("SELECT instance_id, character_id, weapon_id FROM pgcr.weapons")
        rejects = rows("SELECT f.name, r.line_number FROM protheon.rejects r"
                       " JOIN protheon.files f USING (file_id)")  # fmt: skip
        (jobs, ledger_pgcrs, redelivered, deliveries, failed) = rows(
            "SELECT count(*), coalesce(sum(pgcrs), 0), count(*) FILTER (WHERE attempts > 1),"
            " coalesce(sum(attempts), 0), count(*) FILTER (WHERE status = 'failed')"
            " FROM protheon.jobs"
        )[0]
    written = set(instances)
    lost = len(expected.instances - written)
    # Keys are primary keys, so a second copy of a row cannot exist; a job counted twice would
    # show in the ledger's totals, a row from nowhere as "unexpected".
    duplicated = len(instances) - len(written) + max(0, int(str(ledger_pgcrs)) - len(written))
    unexpected = len(written - expected.instances)
    rows_lost = len(expected.entries - set(entries)) + len(expected.weapons - set(weapons))
    rejects_missing = len(expected.rejects - set(rejects))

    print()
    faults = ", ".join(f"{what} at {at:.0f}s" for at, what in events) or "none"
    print(f"chaos run: {len(sources)} files, {len(cast.commands) - 1} workers; faults: {faults}")
    print(f"PGCRs expected    {len(expected.instances):>10,}")
    print(f"PGCRs written     {len(written):>10,}")
    print(f"PGCRs lost        {lost:>10,}")
    print(f"PGCRs duplicated  {duplicated:>10,}")
    print(f"PGCRs unexpected  {unexpected:>10,}")
    print(f"rows lost         {rows_lost:>10,}  (entries and weapons)")
    print(f"rejects expected  {len(expected.rejects):>10,}")
    print(f"rejects recorded  {len(rejects):>10,}")
    print(f"jobs redelivered  {redelivered:>10,}  ({deliveries:,} deliveries of {jobs:,} jobs,"
          f" {failed} failed)")  # fmt: skip
    print(f"processes killed  {sum(cast.kills.values()):>10,}  {cast.kills}")
    print(f"crashed on own    {len(crashed):>10,}  {crashed}")
    print(f"wall time         {wall:>10.1f} s")
    incomplete = any(what == "TIMEOUT" or what.startswith("SKIPPED") for _, what in events)
    healthy = (lost == duplicated == unexpected == rows_lost == rejects_missing == 0
               and len(rejects) == len(expected.rejects) and not crashed and failed == 0
               and not incomplete)  # fmt: skip
    print("RESULT", "OK" if healthy else "FAILED")
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
