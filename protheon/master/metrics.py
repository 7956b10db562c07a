"""The master's metrics: publishing, chunk serving, and the ledger's view of the whole load."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

JOBS_PUBLISHED = Counter("protheon_jobs_published", "Jobs published to RabbitMQ and confirmed")
CHUNK_SERVED_BYTES = Counter("protheon_chunk_served_bytes", "Compressed chunk bytes streamed")
CHUNK_STREAMS = Gauge("protheon_chunk_streams_active", "Chunk streams being served now")
CHUNKS_OPEN = Gauge("protheon_chunks_open", "Chunks in the workspace (jobs not done)")
FIRST_JOB_SECONDS = Histogram(
    "protheon_file_first_job_seconds",
    "From a file first seen in the input folder to its first job published",
    buckets=(0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
)
DEAD_LETTERS = Gauge("protheon_dead_letters", "Jobs waiting in the dead-letter queue")
QUEUE_MESSAGES = Gauge("protheon_queue_messages", "Jobs waiting in the job queue (not delivered)")

# From the ledger (the whole load, all workers), refreshed every few seconds.
FILES = Gauge("protheon_files", "Input files in the ledger", ["status"])
JOBS = Gauge("protheon_jobs", "Jobs in the ledger", ["status"])
JOBS_REMAINING = Gauge("protheon_jobs_remaining", "Jobs cut and not yet done")
FILES_REMAINING = Gauge("protheon_files_remaining", "Files not yet done or failed")
LOADED_PGCRS = Gauge("protheon_loaded_pgcrs", "PGCRs in the database, per the ledger")
LOADED_REJECTS = Gauge("protheon_loaded_rejects", "Rejected lines, per the ledger")
PROGRESS = Gauge("protheon_progress_ratio", "Lines done / lines estimated in all files")
ETA = Gauge("protheon_eta_seconds", "Estimated seconds to finish at the last minute's pace")


def publish_ledger(values: dict[str, Any]) -> None:
    """Export a ``protheon.status.summary`` as gauges."""
    for status in ("total", "done", "failed"):
        FILES.labels(status).set(values[f"files_{status}"])
    for status in ("total", "done", "failed", "running"):
        JOBS.labels(status).set(values[f"jobs_{status}"])
    JOBS_REMAINING.set(values["jobs_total"] - values["jobs_done"])
    FILES_REMAINING.set(values["files_total"] - values["files_done"] - values["files_failed"])
    LOADED_PGCRS.set(values["pgcrs_written"])
    LOADED_REJECTS.set(values["rejects"])
    PROGRESS.set(values["progress"])
    ETA.set(math.nan if values["eta_seconds"] is None else values["eta_seconds"])
