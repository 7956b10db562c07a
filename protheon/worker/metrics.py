"""A worker process's metrics: jobs, rows per table, rejects, bytes, durations."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from protheon.worker.writer import WriteResult

JOBS_DONE = Counter("protheon_jobs_done", "Jobs this worker committed")
JOBS_FAILED = Counter(
    "protheon_jobs_failed", "Job attempts that failed (requeued or dead-lettered)"
)
JOBS_REDELIVERED = Counter("protheon_jobs_redelivered", "Deliveries flagged as redelivered")
JOBS_ALREADY_DONE = Counter(
    "protheon_jobs_already_done", "Deliveries of jobs found done: acked without writing"
)
PGCRS_WRITTEN = Counter("protheon_pgcrs_written", "New PGCRs (instances) written")
DUPLICATES = Counter("protheon_duplicate_pgcrs", "Valid lines whose PGCR was already loaded")
ROWS_WRITTEN = Counter("protheon_rows_written", "Rows written, per table", ["table"])
REJECTS = Counter("protheon_rejects", "Lines rejected into protheon.rejects")
CHUNK_RECEIVED_BYTES = Counter("protheon_chunk_received_bytes", "Compressed chunk bytes fetched")
JOB_SECONDS = Histogram(
    "protheon_job_duration_seconds",
    "From taking a job to its commit",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
IN_FLIGHT = Gauge("protheon_jobs_in_flight", "Jobs delivered to this worker and not settled")

for _table in ("instances", "entries", "weapons", "players", "rejects"):
    ROWS_WRITTEN.labels(_table)  # present from the start, so rate() has a baseline


def record_job(result: WriteResult, seconds: float) -> None:
    JOBS_DONE.inc()
    JOB_SECONDS.observe(seconds)
    PGCRS_WRITTEN.inc(result.pgcrs)
    DUPLICATES.inc(result.duplicates)
    REJECTS.inc(result.rejects)
    for table, rows in (("instances", result.pgcrs), ("entries", result.entries),
                        ("weapons", result.weapons), ("players", result.players),
                        ("rejects", result.rejects)):  # fmt: skip
        ROWS_WRITTEN.labels(table).inc(rows)
