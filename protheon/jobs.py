"""Operator commands on jobs: list them, and retry failed ones.

A job fails when its last allowed delivery fails (or a worker died on it): RabbitMQ parks its
message in the dead-letter queue and the ledger says ``failed`` with the last error. Retrying
takes the message out of the dead-letter queue, resets the job in the ledger and publishes it
afresh, with a fresh delivery count. The master still holds the chunk: chunks of jobs that are
not done are never deleted.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from protheon import broker, db, dead_letters
from protheon.config import Settings


@dataclasses.dataclass(frozen=True)
class JobRow:
    job_id: int
    file_name: str
    seq: int
    status: str
    attempts: int
    worker: str | None
    error: str | None
    finished_at: datetime | None


def list_jobs(settings: Settings, failed_only: bool, limit: int) -> list[JobRow]:
    with db.connect(settings.pg_dsn, "protheon-jobs", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT j.job_id, f.name, j.seq, j.status, j.attempts, j.worker, j.error,"
            " j.finished_at FROM protheon.jobs j JOIN protheon.files f USING (file_id)"
            " WHERE NOT %s OR j.status = 'failed' ORDER BY j.job_id DESC LIMIT %s",
            (failed_only, limit),
        ).fetchall()
    return [JobRow(*row) for row in rows]


def render(rows: list[JobRow]) -> str:
    lines = [f"{'job':>8}  {'status':<9} {'tries':>5}  {'file #seq':<40} error"]
    for row in rows:
        where = f"{row.file_name} #{row.seq}"
        lines.append(
            f"{row.job_id:>8}  {row.status:<9} {row.attempts:>5}  {where:<40} {row.error or ''}"
        )
    return "\n".join(lines)


def retry(settings: Settings, job_ids: list[int] | None) -> list[int]:
    """Retry the given jobs (or every failed job if None); return the ids published again."""
    with (
        db.connect(settings.pg_dsn, "protheon-jobs", autocommit=True) as conn,
        conn.transaction(),
    ):
        rows = conn.execute(
            "SELECT j.job_id, j.file_id, f.name, j.seq, j.first_line, j.line_count,"
            " j.byte_size, j.raw_size, j.head_skip FROM protheon.jobs j JOIN protheon.files f"
            " USING (file_id) WHERE j.status <> 'done' AND"
            " (j.job_id = ANY(%s) OR (%s AND j.status = 'failed')) FOR UPDATE OF j",
            (job_ids or [], job_ids is None),
        ).fetchall()
        messages = {row[0]: broker.JobMessage(*row) for row in rows}
        connection = broker.connect(settings.amqp_url, "protheon-jobs")
        try:
            channel = connection.channel()
            channel.confirm_delivery()  # the queues exist: the master declared them
            dead_letters.sort_out(
                channel,
                settings.queue,
                remove=lambda letter: letter.job is not None and letter.job.job_id in messages,
            )
            conn.execute(
                "UPDATE protheon.jobs SET status = 'published', error = NULL,"
                " published_at = now(), finished_at = NULL WHERE job_id = ANY(%s)",
                (list(messages),),
            )
            for message in messages.values():
                broker.publish_job(channel, settings.queue, message)
        finally:
            connection.close()
    return sorted(messages)
