"""Protheon's benchmark: the ceiling, the pipeline and a naive baseline, side by side, one run.

    python bench/run.py [--files 4] [--lines 50000] [--workers 2] [--naive-lines 4000]

(a) ceiling: one process decompresses, parses, transforms and COPYs with Protheon's own
    transform and exactly-once writer, no queue, no gRPC; then two such processes splitting
    the files (the whole machine's ceiling).
(b) pipeline: ``protheon master`` + K ``protheon worker`` processes through RabbitMQ and gRPC.
(c) naive: ``json.loads`` and one INSERT per row (on a sample: it is slow), as a quick
    task-queue job would do it.
Every scenario loads into a fresh database; numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protheon import db  # noqa: E402
from protheon.certs import make_certs  # noqa: E402
from protheon.pgcr.generator import GeneratorOptions, generate  # noqa: E402

ADMIN_DSN = os.environ.get("PROTHEON_BENCH_ADMIN_DSN", "postgresql:///postgres")
AMQP_URL = os.environ.get("PROTHEON_AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"protheon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = db.with_database(ADMIN_DSN, name)
    db.migrate(dsn)
    try:
        yield dsn
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def counts(dsn: str) -> tuple[int, int]:
    """(PGCRs, rows in all data tables)."""
    with psycopg.connect(dsn) as conn:
        tables = ("instances", "entries", "weapons", "players")
        numbers = [conn.execute(f"SELECT count(*) FROM pgcr.{t}").fetchone()[0] for t in tables]  # type: ignore[index]
    return int(numbers[0]), int(sum(numbers))


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE)  # fmt: skip


CEILING = """
import json, resource, sys, time
import psycopg
from pathlib import Path
from protheon.pgcr.transform import batches
from protheon.worker.writer import JobWriter
from protheon.zstdio import decompressed_blocks

dsn, chunk_lines, *files = sys.argv[1:]
chunk_lines = int(chunk_lines)

def lines(path):
    carry = b""
    with open(path, "rb") as fh:
        for block in decompressed_blocks(fh):
            parts = block.split(b"\\n")
            parts[0] = carry + parts[0]
            carry = parts.pop()
            yield from parts
    if carry:
        yield carry

writer = JobWriter(dsn, "ceiling")
with psycopg.connect(dsn, autocommit=True) as conn:
    for path in files:
        file_id = conn.execute(
            "INSERT INTO protheon.files (name, size_bytes, mtime) VALUES (%s, 1, now())"
            " RETURNING file_id", (Path(path).name,)).fetchone()[0]
        chunk, first, seq = [], 1, 0
        def flush():
            global chunk, first, seq
            job = conn.execute(
                "INSERT INTO protheon.jobs (file_id, seq, first_line, line_count, byte_size,"
                " raw_size) VALUES (%s, %s, %s, %s, 0, 0) RETURNING job_id",
                (file_id, seq, first, len(chunk))).fetchone()[0]
            data = chunk
            writer.write(job, file_id, lambda: batches(data, job), first_line=first)
            first += len(chunk); seq += 1; chunk = []
        for line in lines(path):
            chunk.append(line)
            if len(chunk) == chunk_lines:
                flush()
        if chunk:
            flush()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024}))
"""

NAIVE = """
import json, resource, sys
import psycopg, zstandard
from protheon.zstdio import decompressed_blocks

dsn, limit, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = psycopg.connect(dsn)
done = 0
with open(path, "rb") as fh:
    data = b"".join(decompressed_blocks(fh))
for raw in data.split(b"\\n")[:limit]:
    try:
        pgcr = json.loads(raw)
        iid = int(pgcr["_id"])
        conn.execute("INSERT INTO pgcr.instances (instance_id, period, player_count, entry_count,"
                     " completed, flawless, job_id) VALUES (%s, %s, 0, 0, false, false, 0)"
                     " ON CONFLICT DO NOTHING", (iid, pgcr["period"]))
        for e in pgcr.get("entries") or []:
            cid = int(e["characterId"]); mid = int(e["player"]["destinyUserInfo"]["membershipId"])
            v = e.get("values") or {}
            conn.execute("INSERT INTO pgcr.entries (instance_id, character_id, membership_id,"
                         " kills, deaths, assists) VALUES (%s, %s, %s, %s, %s, %s)"
                         " ON CONFLICT DO NOTHING",
                         (iid, cid, mid, int(v.get("kills", 0)), int(v.get("deaths", 0)),
                          int(v.get("assists", 0))))
            conn.execute("INSERT INTO pgcr.players (membership_id, display_name,"
                         " last_instance_id, last_seen) VALUES (%s, %s, %s, now())"
                         " ON CONFLICT (membership_id) DO UPDATE SET display_name ="
                         " EXCLUDED.display_name", (mid, e["player"]["destinyUserInfo"].get(
                         "displayName"), iid))
            for w in (e.get("extended") or {}).get("weapons") or []:
                conn.execute("INSERT INTO pgcr.weapons (instance_id, character_id, weapon_id,"
                             " kills) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                             (iid, cid, int(w["referenceId"]),
                              int(w.get("values", {}).get("uniqueWeaponKills", 0))))
        conn.commit()
        done += 1
    except (ValueError, KeyError, TypeError, psycopg.Error):
        conn.rollback()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024,
                  "pgcrs": done}))
"""


def ceiling(files: list[Path], processes: int, chunk_lines: int) -> dict[str, float]:
    with fresh_database() as dsn:
        started = time.monotonic()
        shares = [files[i::processes] for i in range(processes)]
        children = [python(CEILING, dsn, str(chunk_lines), *map(str, share)) for share in shares]
        reports = [json.loads(child.communicate()[0]) for child in children]
        wall = time.monotonic() - started
        pgcrs, rows = counts(dsn)
    return {"wall": wall, "pgcrs": pgcrs, "rows": rows,
            "worker_cpu": sum(r["cpu"] for r in reports),
            "worker_rss": max(r["rss"] for r in reports), "master_cpu": 0.0}  # fmt: skip


def pipeline(files: list[Path], workers: int, chunk_lines: int, work: Path) -> dict[str, float]:
    inbox, workspace = work / "input", work / "workspace"
    shutil.rmtree(work, ignore_errors=True)
    inbox.mkdir(parents=True)
    queue = f"protheon.bench.{uuid.uuid4().hex[:8]}"
    with fresh_database() as dsn:
        env = {**os.environ, "PROTHEON_PG_DSN": dsn, "PROTHEON_AMQP_URL": AMQP_URL,
               "PROTHEON_QUEUE": queue, "PROTHEON_MASTER_METRICS_PORT": "0",
               "PROTHEON_WORKER_METRICS_PORT": "0", "PROTHEON_LOG_LEVEL": "WARNING",
               "PROTHEON_RPC_TLS_DIR": str(work / "tls")}  # fmt: skip
        make_certs(work / "tls")  # TLS + token, as deployed
        cli = [sys.executable, "-m", "protheon"]
        master = subprocess.Popen([*cli, "master", "--input", str(inbox), "--workspace",
                                   str(workspace), "--listen", "127.0.0.1:50591",
                                   "--chunk-lines", str(chunk_lines)],
                                  env=env, cwd=ROOT)  # fmt: skip
        procs = [subprocess.Popen([*cli, "worker", "--master", "127.0.0.1:50591",
                                   "--concurrency", "1", "--worker-name", f"bench-{i}"],
                                  env=env, cwd=ROOT) for i in range(workers)]  # fmt: skip
        time.sleep(2)  # processes up and connected: time the load, not the start
        baseline = {p.pid: proc_stats(p.pid)[0] for p in [master, *procs]}
        appeared: dict[str, float] = {}
        started = time.monotonic()
        for path in files:  # each file is renamed in complete, as rsync would
            shutil.copy2(path, inbox / f".{path.name}.part")  # keeps mtime, like rsync -a
            os.replace(inbox / f".{path.name}.part", inbox / path.name)
            appeared[path.name] = time.time()
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:  # loaded = every file registered and split, every job committed
                files_split, jobs_open = conn.execute(
                    "SELECT (SELECT count(*) FROM protheon.files WHERE status <> 'splitting'),"
                    " (SELECT count(*) FROM protheon.jobs WHERE status <> 'done')"
                ).fetchone()  # type: ignore[misc]
                if files_split == len(files) and not jobs_open:
                    break
                time.sleep(0.05)
            wall = time.monotonic() - started
            firsts = conn.execute(
                "SELECT f.name, extract(epoch FROM min(j.published_at)) FROM protheon.jobs j"
                " JOIN protheon.files f USING (file_id) GROUP BY f.name"
            ).fetchall()
        stats = {p.pid: proc_stats(p.pid) for p in [master, *procs]}
        for process in [*procs, master]:
            process.send_signal(signal.SIGTERM)
        for process in [*procs, master]:
            process.wait(timeout=60)
        pgcrs, rows = counts(dsn)
    # The first file's: later files that appear at the same moment queue behind its split.
    latencies = sorted(float(first) - appeared[name] for name, first in firsts)
    return {"wall": wall, "pgcrs": pgcrs, "rows": rows, "first_job": latencies[0],
            "first_job_last_file": latencies[-1],
            "master_cpu": stats[master.pid][0] - baseline[master.pid],
            "master_rss": stats[master.pid][1],
            "worker_cpu": sum(stats[p.pid][0] - baseline[p.pid] for p in procs),
            "worker_rss": max(stats[p.pid][1] for p in procs)}  # fmt: skip


def naive(path: Path, limit: int) -> dict[str, float]:
    with fresh_database() as dsn:
        started = time.monotonic()
        child = python(NAIVE, dsn, str(limit), str(path))
        report = json.loads(child.communicate()[0])
        wall = time.monotonic() - started
        pgcrs, rows = counts(dsn)
    return {"wall": wall, "pgcrs": pgcrs, "rows": rows, "worker_cpu": report["cpu"],
            "worker_rss": report["rss"], "master_cpu": 0.0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-lines", type=int, default=50_000)
    parser.add_argument("--naive-lines", type=int, default=4_000)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "work")
    parser.add_argument("--multi-frame", action="store_true", help="pzstd-style inputs")
    args = parser.parse_args(argv)

    data = args.dir / f"data-{args.files}x{args.lines}{'-mf' if args.multi_frame else ''}"
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {args.files} x {args.lines:,} PGCRs into {data} ...", flush=True)
        generate(GeneratorOptions(out=data, files=args.files, lines=args.lines, seed=2026,
                                  dup_rate=0.02, bad_rate=0.001,
                                  multi_frame=args.multi_frame))  # fmt: skip
        (data / ".complete").touch()
    files = sorted(data.glob("*.jsonl.zst"))
    raw_gb = sum(
        len(block) for path in files for block in _blocks(path)
    ) / 1e9  # fmt: skip

    results: dict[str, dict[str, float]] = {}
    print("(a) ceiling, 1 process ...", flush=True)
    results["(a) ceiling, 1 process"] = ceiling(files, 1, args.chunk_lines)
    print("(a) ceiling, 2 processes ...", flush=True)
    results["(a) ceiling, 2 processes"] = ceiling(files, 2, args.chunk_lines)
    print(f"(b) pipeline, master + {args.workers} workers ...", flush=True)
    results[f"(b) Protheon, master + {args.workers} workers"] = pipeline(
        files, args.workers, args.chunk_lines, args.dir / "pipeline"
    )
    print(f"(c) naive, json.loads + INSERT per row, {args.naive_lines:,} lines ...", flush=True)
    results["(c) naive INSERT per row (sample)"] = naive(files[0], args.naive_lines)
    report(results, raw_gb, args)
    return 0


def _blocks(path: Path) -> Iterator[bytes]:
    from protheon.zstdio import decompressed_blocks

    with path.open("rb") as fh:
        yield from decompressed_blocks(fh)


def report(results: dict[str, dict[str, float]], raw_gb: float, args: argparse.Namespace) -> None:
    two = results["(a) ceiling, 2 processes"]
    ceiling_rate = two["pgcrs"] / two["wall"]
    print()
    print(f"data: {args.files} files x {args.lines:,} lines (2% duplicates, 0.1% malformed),"
          f" {raw_gb:.2f} GB uncompressed; {os.cpu_count()} CPUs,"
          " everything on this machine")  # fmt: skip
    header = (f"{'scenario':<40} {'PGCRs/s':>9} {'rows/s':>10} {'vs (a)2p':>8} "
              f"{'CPU-s/1k PGCRs':>22} {'peak RSS MB':>16} {'first job':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        rate = r["pgcrs"] / r["wall"]
        per_k = 1000 / r["pgcrs"]
        cpu = f"m {r['master_cpu'] * per_k:.3f} w {r['worker_cpu'] * per_k:.3f}"
        rss = (f"m {r.get('master_rss', 0) / 1e6:.0f} w {r['worker_rss'] / 1e6:.0f}"
               if "master_rss" in r else f"w {r['worker_rss'] / 1e6:.0f}")  # fmt: skip
        first = f"{r['first_job']:.2f} s" if "first_job" in r else "-"
        print(f"{name:<40} {rate:>9,.0f} {r['rows'] / r['wall']:>10,.0f} "
              f"{rate / ceiling_rate:>8.2f} {cpu:>22} {rss:>16} {first:>9}")  # fmt: skip
    piped = results[f"(b) Protheon, master + {args.workers} workers"]
    slow = results["(c) naive INSERT per row (sample)"]
    print()
    speedup = (piped["pgcrs"] / piped["wall"]) / (slow["pgcrs"] / slow["wall"])
    print(f"pipeline / naive: {speedup:.0f}x")
    print(
        f"first job published {piped['first_job']:.2f} s after the first file appeared"
        f" ({piped['first_job_last_file']:.2f} s for the last of {args.files} appearing"
        " together: files are split one after another)"
    )
    master_per_gb = piped["master_cpu"] / raw_gb
    worker_per_gb = piped["worker_cpu"] / raw_gb
    print(f"master CPU-s per GB (uncompressed) served: {master_per_gb:.2f}; workers:"
          f" {worker_per_gb:.2f} -> master = {100 * master_per_gb / worker_per_gb:.1f}% of"
          f" workers: one master core feeds ~{worker_per_gb / max(master_per_gb, 1e-9):.0f}"
          " worker cores")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
