"""The master's side of the ledger: files, their split progress, and the jobs cut from them.

Every step is recorded before the next one happens (chunk written → job row → published), so a
master restarted at any point can tell from these rows and the workspace what is left to do.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

import psycopg

from protheon import db
from protheon.broker import JobMessage
from protheon.master.splitter import Chunk
from protheon.master.watcher import SourceIdentity


@dataclasses.dataclass(frozen=True)
class FileRecord:
    file_id: int
    name: str
    size_bytes: int
    mtime: datetime
    status: str
    lines_split: int
    chunks_split: int


@dataclasses.dataclass(frozen=True)
class JobRecord:
    message: JobMessage  # what is published for the job
    status: str
    source_offset: int | None  # set for a chunk passed through from its source
    tail: bytes
    source: SourceIdentity  # the file as registered (a passed-through chunk is read from it)


_FILE_COLUMNS = "file_id, name, size_bytes, mtime, status, lines_split, chunks_split"
_JOB_COLUMNS = (
    "j.job_id, j.file_id, f.name, j.seq, j.first_line, j.line_count, j.byte_size, j.raw_size,"
    " j.head_skip, j.status, j.source_offset, j.tail, f.size_bytes, f.mtime"
)


class MasterLedger:
    """One autocommit connection, guarded by a lock so the gRPC threads can share it."""

    def __init__(self, dsn: str, application_name: str = "protheon-master") -> None:
        self._dsn = dsn
        self._name = application_name
        self._connection: psycopg.Connection | None = None
        self._lock = threading.Lock()

    @property
    def _conn(self) -> psycopg.Connection:
        """The connection, reopened if PostgreSQL restarted since (callers hold the lock)."""
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._connection = db.connect(self._dsn, self._name, autocommit=True)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def files_by_name(self) -> dict[str, FileRecord]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_FILE_COLUMNS} FROM protheon.files").fetchall()
        return {row[1]: FileRecord(*row) for row in rows}

    def register_file(self, name: str, size_bytes: int, mtime: datetime) -> FileRecord:
        with self._lock:
            row = self._conn.execute(
                "INSERT INTO protheon.files (name, size_bytes, mtime) VALUES (%s, %s, %s)"
                f" RETURNING {_FILE_COLUMNS}",
                (name, size_bytes, mtime),
            ).fetchone()
        assert row is not None
        return FileRecord(*row)

    def record_chunk(self, file_id: int, chunk: Chunk) -> int:
        """Insert the chunk's job and advance the file's split progress, atomically."""
        with self._lock, self._conn.transaction():
            row = self._conn.execute(
                "INSERT INTO protheon.jobs (file_id, seq, first_line, line_count, byte_size,"
                " raw_size, source_offset, head_skip, tail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING job_id",
                (file_id, chunk.seq, chunk.first_line, chunk.line_count, chunk.byte_size,
                 chunk.raw_size, chunk.source_offset, chunk.head_skip, chunk.tail),
            ).fetchone()  # fmt: skip
            self._conn.execute(
                "UPDATE protheon.files SET lines_split = coalesce(%s, lines_split),"
                " chunks_split = %s WHERE file_id = %s",
                (chunk.lines_after, chunk.seq + 1, file_id),
            )
        assert row is not None
        return int(row[0])

    def mark_published(self, job_id: int) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE protheon.jobs SET status = 'published', published_at = now()"
                " WHERE job_id = %s AND status = 'ready'",
                (job_id,),
            )

    def finish_split(self, file_id: int, lines_total: int | None, chunks_total: int) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE protheon.files SET status = 'split', split_at = now(),"
                " lines_total = %s, chunks_total = %s WHERE file_id = %s",
                (lines_total, chunks_total, file_id),
            )

    def fail_file(
        self, file_id: int, error: str, lines_split: int | None, chunks_split: int
    ) -> None:
        """The file cannot be read further; the chunks already cut still load."""
        with self._lock:
            self._conn.execute(
                "UPDATE protheon.files SET status = 'failed', error = %s, split_at = now(),"
                " lines_total = %s, chunks_total = %s WHERE file_id = %s",
                (error, lines_split, chunks_split, file_id),
            )

    def mark_dead(self, job_ids: list[int], reason: str) -> int:
        """Jobs found in the dead-letter queue are failed, keeping the last error a worker saw."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE protheon.jobs SET status = 'failed', finished_at = now(),"
                " error = coalesce(error, %s)"
                " WHERE job_id = ANY(%s) AND status NOT IN ('done', 'failed')",
                (reason, job_ids),
            )
        return cur.rowcount

    def count_failed_jobs(self) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM protheon.jobs WHERE status = 'failed'"
            ).fetchone()
        return int(row[0]) if row else 0

    def open_jobs(self) -> list[JobRecord]:
        """Jobs whose chunk must still be kept and served (anything not done)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM protheon.jobs j"
                " JOIN protheon.files f USING (file_id)"
                " WHERE j.status <> 'done' ORDER BY j.job_id"
            ).fetchall()
        return [
            JobRecord(JobMessage(*row[:-5]), row[-5], row[-4], bytes(row[-3]),
                      SourceIdentity(row[-2], row[-1]))
            for row in rows
        ]  # fmt: skip

    def done_among(self, job_ids: list[int]) -> set[int]:
        if not job_ids:
            return set()
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id FROM protheon.jobs WHERE job_id = ANY(%s) AND status = 'done'",
                (job_ids,),
            ).fetchall()
        return {row[0] for row in rows}

    def number_lines(self) -> None:
        """Give passed-through jobs whose earlier chunks all have a line count their first
        line, then their rejects a line number in the file (the partial indexes keep this to
        the few rows still waiting)."""
        with self._lock, self._conn.transaction():
            self._conn.execute(_NUMBER_JOBS)
            self._conn.execute(
                "UPDATE protheon.rejects r SET line_number = j.first_line + r.line_in_job - 1"
                " FROM protheon.jobs j WHERE r.line_number IS NULL AND j.job_id = r.job_id"
                " AND j.first_line IS NOT NULL"
            )

    def close_finished_files(self) -> list[str]:
        """Mark split files whose jobs are all done as done, with their line total (known only
        now for a passed-through file); return their names."""
        self.number_lines()
        with self._lock:
            rows = self._conn.execute(
                "UPDATE protheon.files f SET status = 'done', done_at = now(),"
                " lines_total = (SELECT sum(line_count) FROM protheon.jobs j"
                "                WHERE j.file_id = f.file_id)"
                " WHERE f.status = 'split' AND NOT EXISTS ("
                "   SELECT 1 FROM protheon.jobs j WHERE j.file_id = f.file_id"
                "   AND j.status <> 'done')"
                " RETURNING f.name"
            ).fetchall()
        return [row[0] for row in rows]


# A job's first line is 1 + the lines of the chunks before it, once none of those is unknown.
_NUMBER_JOBS = """
WITH numbered AS (
  SELECT job_id,
         1 + sum(line_count) OVER w - line_count AS first_line,
         count(*) FILTER (WHERE line_count IS NULL) OVER w AS unknown
  FROM protheon.jobs
  WHERE file_id IN (SELECT file_id FROM protheon.jobs WHERE first_line IS NULL)
  WINDOW w AS (PARTITION BY file_id ORDER BY seq)
)
UPDATE protheon.jobs j SET first_line = n.first_line
FROM numbered n
WHERE j.job_id = n.job_id AND j.first_line IS NULL AND n.unknown = 0
"""
