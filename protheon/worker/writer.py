"""Write one job's rows exactly once.

In one transaction: lock the job's ledger row; if it is already done, write nothing (a
redelivery). Otherwise insert the instances through a staging table with ``ON CONFLICT DO
NOTHING RETURNING`` — the instances that come back are the ones this job owns, so their entries
and weapons go straight into the real tables by plain COPY (no staging needed: no one else can
own them). Players are upserted keeping the names of the latest instance. Rejects and the done
mark commit with the rows. Rows are inserted in key order so that concurrent jobs take row locks
in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import psycopg
from psycopg import sql

from protheon import db
from protheon.pgcr.transform import (
    ENTRY_COLUMNS,
    INSTANCE_COLUMNS,
    PLAYER_COLUMNS,
    WEAPON_COLUMNS,
    Batch,
    Row,
)

log = logging.getLogger(__name__)

# Ordered retries wait longer than streaming first attempts before checking for a deadlock, so
# PostgreSQL aborts the streaming side of a cycle (which then retries ordered): each job is
# aborted about once, and ordered retries cannot deadlock each other.
DEADLOCK_ATTEMPTS = 25
ORDERED_DEADLOCK_TIMEOUT = "10s"
REJECT_COLUMNS = (
    "file_id", "job_id", "line_in_job", "line_number", "error", "line_bytes", "raw_line"
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class WriteResult:
    already_done: bool
    pgcrs: int = 0
    duplicates: int = 0
    entries: int = 0
    weapons: int = 0
    players: int = 0
    rejects: int = 0

    @property
    def rows(self) -> int:
        return self.pgcrs + self.entries + self.weapons + self.players + self.rejects


def _reject_rows(
    file_id: int, job_id: int, first_line: int | None, rejects: Iterable[Row]
) -> Iterator[Row]:
    """Rejects with their line in the file when the job knows where it starts."""
    for line_in_job, *rest in rejects:
        assert isinstance(line_in_job, int)
        line = None if first_line is None else first_line + line_in_job - 1
        yield (file_id, job_id, line_in_job, line, *rest)


def _columns(names: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


class JobWriter:
    def __init__(self, dsn: str, worker_name: str) -> None:
        self._dsn = dsn
        self._worker = worker_name
        self._conn: psycopg.Connection | None = None
        self._types: dict[str, dict[str, str]] = {}  # per table, for binary COPY
        self._warned_deadlock_timeout = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = db.connect(self._dsn, f"protheon-worker {self._worker}", autocommit=True)
            self._types = {}
            # A worker that vanished mid-job must not hold its job's locks for hours: its
            # session would sit idle in transaction, which the server then ends.
            self._conn.execute("SET idle_in_transaction_session_timeout = '5min'")
            with self._conn.transaction():
                for table in ("instances", "players"):
                    self._conn.execute(
                        sql.SQL(
                            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
                        ).format(sql.Identifier(f"staging_{table}"), sql.Identifier("pgcr", table))
                    )
        return self._conn

    def claim(self, job_id: int, count_attempt: bool = True) -> str | None:
        """Mark the job running (counting an attempt); else its status ("done" or "unknown")."""
        conn = self._connection()
        with conn.transaction():
            row = conn.execute(
                "UPDATE protheon.jobs SET status = 'running', attempts = attempts + %s,"
                " worker = %s, started_at = now(), error = NULL"
                " WHERE job_id = %s AND status <> 'done' RETURNING job_id",
                (int(count_attempt), self._worker, job_id),
            ).fetchone()
            if row is not None:
                return None
            found = conn.execute(
                "SELECT status FROM protheon.jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
        return str(found[0]) if found else "unknown"

    def record_error(self, job_id: int, error: str) -> None:
        """Leave the job for another attempt, with the reason an operator will see."""
        self._set_error(job_id, "published", error)

    def mark_failed(self, job_id: int, error: str) -> None:
        """The job's last allowed delivery failed: RabbitMQ dead-letters it; the ledger says so."""
        self._set_error(job_id, "failed", error)

    def _set_error(self, job_id: int, status: str, error: str) -> None:
        """Best effort: the ledger may be the thing that is down."""
        try:
            conn = self._connection()
            with conn.transaction():
                conn.execute(
                    "UPDATE protheon.jobs SET status = %s, error = %s,"
                    " finished_at = CASE WHEN %s = 'failed' THEN now() END"
                    " WHERE job_id = %s AND status <> 'done'",
                    (status, error[:2000], status, job_id),
                )
        except psycopg.Error:
            log.exception("job %d: could not record %s in the ledger", job_id, status)

    def write(
        self,
        job_id: int,
        file_id: int,
        make_batches: Callable[[], Iterable[Batch]],
        on_batch: Callable[[], None] = lambda: None,
        first_line: int | None = 1,
    ) -> WriteResult:
        """Write every batch and the done mark in one transaction.

        ``first_line``: the file's number of the job's first line, for the rejects; None when
        the job does not know it (a passed-through chunk): the master numbers them later.

        Batches stream, so two jobs holding the same duplicate PGCRs in opposite orders can
        deadlock on each other's uncommitted instance rows. PostgreSQL then aborts one of them;
        that one starts over from ``make_batches()`` (the chunk is still in memory) after a
        short random pause, this time inserting all its instances first, in one statement in
        key order, then transforming the chunk again for the rest: memory stays bounded by
        the job's instance rows, not all its rows. Any other error raises: the job is
        redelivered later, which is safe because nothing of it committed.
        """
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                # Retries take their instance locks in key order: ordered lock takers cannot
                # deadlock each other, so this converges.
                return self._write_once(
                    job_id, file_id, make_batches, on_batch, first_line,
                    instances_first=attempt > 1,
                )  # fmt: skip
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                log.warning("job %d: %s; starting over (%d)", job_id, exc.sqlstate, attempt)
                time.sleep(random.uniform(0.05, 0.3))
        raise AssertionError("unreachable")

    def _write_once(
        self,
        job_id: int,
        file_id: int,
        make_batches: Callable[[], Iterable[Batch]],
        on_batch: Callable[[], None],
        first_line: int | None,
        instances_first: bool,
    ) -> WriteResult:
        conn = self._connection()
        counts = dict.fromkeys(("pgcrs", "duplicates", "entries", "weapons", "rejects"), 0)
        lines = 0
        with conn.transaction(), conn.cursor() as cur:
            status = cur.execute(
                "SELECT status FROM protheon.jobs WHERE job_id = %s FOR UPDATE", (job_id,)
            ).fetchone()
            if status is None:
                raise LookupError(f"job {job_id} is not in the ledger")
            if status[0] == "done":
                return WriteResult(already_done=True)
            owned_by_job: set[int] | None = None
            if instances_first:
                self._outwait_streaming_jobs(cur)
                owned_by_job = self._insert_instances(
                    cur, [row for batch in make_batches() for row in batch.instances]
                )
                cur.execute("TRUNCATE staging_instances")
                on_batch()
            for batch in make_batches():
                if owned_by_job is None:
                    owned = self._insert_instances(cur, batch.instances)
                    cur.execute("TRUNCATE staging_instances")  # each batch sees only its own
                else:
                    owned = owned_by_job.intersection(row[0] for row in batch.instances)
                entries = sorted(row for row in batch.entries if row[0] in owned)
                weapons = sorted(row for row in batch.weapons if row[0] in owned)
                self._copy(cur, "pgcr.entries", ENTRY_COLUMNS, entries)
                self._copy(cur, "pgcr.weapons", WEAPON_COLUMNS, weapons)
                players = (row for row in batch.players.values() if row[7] in owned)
                self._copy(cur, "staging_players", PLAYER_COLUMNS, players)
                self._copy(
                    cur, "protheon.rejects", REJECT_COLUMNS,
                    _reject_rows(file_id, job_id, first_line, batch.rejects),
                )  # fmt: skip
                counts["pgcrs"] += len(owned)
                counts["duplicates"] += batch.duplicate_lines + len(batch.instances) - len(owned)
                counts["entries"] += len(entries)
                counts["weapons"] += len(weapons)
                counts["rejects"] += len(batch.rejects)
                lines += batch.lines
                on_batch()
            players_written = self._upsert_players(cur)
            result = WriteResult(already_done=False, players=players_written, **counts)
            cur.execute(
                # clock_timestamp(): the commit's time, not the transaction's start (now())
                "UPDATE protheon.jobs SET status = 'done', finished_at = clock_timestamp(),"
                " worker = %s, error = NULL, pgcrs = %s, duplicates = %s, entries = %s,"
                " weapons = %s, players = %s, rejects = %s, line_count = %s WHERE job_id = %s",
                (self._worker, result.pgcrs, result.duplicates, result.entries, result.weapons,
                 result.players, result.rejects, lines, job_id),
            )  # fmt: skip
        return result

    def _outwait_streaming_jobs(self, cur: psycopg.Cursor[tuple[object, ...]]) -> None:
        """Let the other side of a deadlock be the one PostgreSQL aborts (the backend that
        waited deadlock_timeout first checks, and aborts itself). Needs the SET privilege on
        deadlock_timeout (the Ansible role grants it); without it, retries still converge,
        only more slowly."""
        try:
            with cur.connection.transaction():
                cur.execute(f"SET LOCAL deadlock_timeout = '{ORDERED_DEADLOCK_TIMEOUT}'")
        except psycopg.errors.InsufficientPrivilege:
            if not self._warned_deadlock_timeout:
                log.warning(
                    "cannot raise deadlock_timeout for ordered retries (grant SET on it to"
                    " this role): deadlocked jobs may retry several times"
                )
                self._warned_deadlock_timeout = True

    def _copy(self, cur: psycopg.Cursor[tuple[object, ...]], table: str,
              columns: Sequence[str], rows: Iterable[Row]) -> None:  # fmt: skip
        """COPY in binary: psycopg formats a binary row ~3.5x faster than a text one (entries
        rows, measured here), and the server skips parsing numbers out of text."""
        if table not in self._types:
            found = cur.execute(
                "SELECT attname, atttypid::regtype::text FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
            self._types[table] = {str(column): str(kind) for column, kind in found}
        schema, _, name = table.rpartition(".")
        target = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, _columns(columns)
        )
        with cur.copy(statement) as copy:
            copy.set_types([self._types[table][column] for column in columns])
            for row in rows:
                copy.write_row(row)

    def _insert_instances(
        self, cur: psycopg.Cursor[tuple[object, ...]], rows: list[Row]
    ) -> set[int]:
        if not rows:
            return set()
        self._copy(cur, "staging_instances", INSTANCE_COLUMNS, rows)
        cur.execute(
            sql.SQL(
                "INSERT INTO pgcr.instances ({cols}) SELECT {cols} FROM staging_instances"
                " ORDER BY instance_id ON CONFLICT DO NOTHING RETURNING instance_id"
            ).format(cols=_columns(INSTANCE_COLUMNS))
        )
        return {row[0] for row in cur.fetchall()}  # type: ignore[misc]

    def _upsert_players(self, cur: psycopg.Cursor[tuple[object, ...]]) -> int:
        """Apply the staged players once, in key order, keeping each player's latest names."""
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
            for name in PLAYER_COLUMNS[1:]
        )
        cur.execute(
            sql.SQL(
                "INSERT INTO pgcr.players ({cols})"
                " SELECT DISTINCT ON (membership_id) {cols} FROM staging_players"
                " ORDER BY membership_id, last_instance_id DESC"
                " ON CONFLICT (membership_id) DO UPDATE SET {updates}"
                " WHERE pgcr.players.last_instance_id < EXCLUDED.last_instance_id"
            ).format(cols=_columns(PLAYER_COLUMNS), updates=updates)
        )
        return cur.rowcount
