"""The ``protheon`` command line. Flags override environment, which overrides ``--config``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from protheon import logs
from protheon.config import ConfigError, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protheon", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (or PROTHEON_CONFIG)")
    parser.add_argument("--pg-dsn", help="PostgreSQL DSN (PROTHEON_PG_DSN)")
    parser.add_argument("--amqp-url", help="RabbitMQ URL (PROTHEON_AMQP_URL)")
    parser.add_argument("--queue", help="job queue name (PROTHEON_QUEUE)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ... (PROTHEON_LOG_LEVEL)")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("gen", help="generate a sample dataset")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--files", type=int, default=2)
    gen.add_argument("--lines", type=int, default=10_000, help="lines per file")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--start-id", type=int, default=12_000_000_000)
    gen.add_argument("--dup-rate", type=float, default=0.0)
    gen.add_argument("--bad-rate", type=float, default=0.0)
    gen.add_argument("--multi-frame", action="store_true")

    database = commands.add_parser("db", help="database administration")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("migrate", help="apply pending schema migrations")
    db_commands.add_parser("create", help="create the database the DSN names, if missing")

    master = commands.add_parser("master", help="run the master")
    master.add_argument("--input", type=Path)
    master.add_argument("--workspace", type=Path)
    master.add_argument("--listen", help="gRPC HOST:PORT (PROTHEON_LISTEN)")
    master.add_argument("--chunk-lines", type=int)
    master.add_argument("--max-ready-chunks", type=int)
    master.add_argument("--settle-seconds", type=float)
    master.add_argument("--metrics-port", dest="master_metrics_port", type=int)

    worker = commands.add_parser("worker", help="run worker processes")
    worker.add_argument("--master", help="master's gRPC HOST:PORT (PROTHEON_MASTER)")
    worker.add_argument("--concurrency", type=int, help="consumer processes (default: CPUs)")
    worker.add_argument("--prefetch", type=int)
    worker.add_argument("--worker-name")
    worker.add_argument("--worker-index", type=int, help="Nth worker process of this host")
    worker.add_argument("--metrics-port", dest="worker_metrics_port", type=int,
                        help="port of worker 1; worker N uses port + N - 1")  # fmt: skip

    jobs = commands.add_parser("jobs", help="look at jobs and retry failed ones")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_list = jobs_commands.add_parser("list", help="recent jobs, newest first")
    jobs_list.add_argument("--failed", action="store_true", help="only failed jobs")
    jobs_list.add_argument("--limit", type=int, default=50)
    jobs_retry = jobs_commands.add_parser("retry", help="publish failed jobs again")
    target = jobs_retry.add_mutually_exclusive_group(required=True)
    target.add_argument("--failed", action="store_true", help="every failed job")
    target.add_argument("job_ids", nargs="*", type=int, default=[], metavar="JOB_ID")

    health = commands.add_parser("health", help="exit 0 if the master serves, 1 if not")
    health.add_argument("--master", help="master's gRPC HOST:PORT (PROTHEON_MASTER)")
    health.add_argument("--timeout", type=float, default=5.0)

    certs = commands.add_parser(
        "certs", help="make a private CA, the master's TLS certificate and the shared token"
    )
    certs.add_argument("--dir", type=Path, help="where to write them (default: rpc_tls_dir)")
    certs.add_argument(
        "--host", action="append", default=[], metavar="NAME_OR_IP",
        help="a name or address workers use to reach the master (repeat)",
    )  # fmt: skip

    status = commands.add_parser("status", help="progress of the load")
    status.add_argument("--json", action="store_true", help="machine-readable, for scripts")
    status.add_argument("--watch", action="store_true", help="redraw every 2 s until Ctrl-C")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key not in {"config", "command"}
    }
    try:
        settings = load_settings(flags, args.config)
    except ConfigError as exc:
        print(f"protheon: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    handler = _COMMANDS[args.command]
    try:
        return handler(args, settings)
    except ConfigError as exc:  # found when a command reads what a setting points to
        print(f"protheon: {exc}", file=sys.stderr)
        return 2


def _gen(args: argparse.Namespace, settings: Settings) -> int:
    from protheon.pgcr.generator import GeneratorOptions, generate

    options = GeneratorOptions(
        out=args.out, files=args.files, lines=args.lines, seed=args.seed,
        start_id=args.start_id, dup_rate=args.dup_rate, bad_rate=args.bad_rate,
        multi_frame=args.multi_frame,
    )  # fmt: skip
    for made in generate(options):
        print(
            f"{made.path}: {made.lines} lines ({made.duplicate_lines} duplicates,"
            f" {made.bad_lines} malformed), {made.bytes_uncompressed / 1e6:.1f} MB uncompressed"
        )
    return 0


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from protheon import db

    if args.db_command == "create":
        created = db.create_database(settings.pg_dsn)
        print("database created" if created else "database already exists")
        return 0
    applied = db.migrate(settings.pg_dsn)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _master(args: argparse.Namespace, settings: Settings) -> int:
    from protheon import rpc_auth
    from protheon.master.service import Master

    rpc_auth.load(settings, master=True)  # fail before connecting to anything

    master = Master(settings)
    master.install_signal_handlers()
    return master.run()


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from protheon import rpc_auth
    from protheon.worker.pool import run_workers

    rpc_auth.load(settings)  # a missing certificate or token: say so once, before any fork

    return run_workers(settings)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from protheon import status

    if args.watch:
        status.watch(settings.pg_dsn)
        return 0
    values = status.summary(settings.pg_dsn)
    print(status.to_json(values) if args.json else status.render(values))
    return 0


def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    from protheon import jobs

    if args.jobs_command == "list":
        print(jobs.render(jobs.list_jobs(settings, args.failed, args.limit)))
        return 0
    if not args.failed and not args.job_ids:
        print("protheon: name job ids or --failed", file=sys.stderr)
        return 2
    retried = jobs.retry(settings, None if args.failed else args.job_ids)
    print(f"published again: {', '.join(map(str, retried))}" if retried else "nothing to retry")
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    from protheon import rpc_auth
    from protheon.health import check

    state = check(settings.master, rpc_auth.load(settings), args.timeout)
    print(state)
    return 0 if state == "SERVING" else 1


def _certs(args: argparse.Namespace, settings: Settings) -> int:
    from protheon.certs import make_certs

    folder = args.dir or settings.rpc_tls_dir
    written = make_certs(folder, args.host)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{folder} already holds a CA, the master's certificate and a token")
    print(f"workers need {folder / 'ca.pem'} and {folder / 'token'} in their rpc_tls_dir;"
          " ca.key stays here")  # fmt: skip
    return 0


_COMMANDS = {
    "gen": _gen,
    "db": _db,
    "master": _master,
    "worker": _worker,
    "status": _status,
    "jobs": _jobs,
    "health": _health,
    "certs": _certs,
}

if __name__ == "__main__":
    raise SystemExit(main())
