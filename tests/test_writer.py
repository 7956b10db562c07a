"""Exactly-once writing against the real PostgreSQL: replays, duplicates, concurrency."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import psycopg
import pytest

from protheon.pgcr.transform import (
    ENTRY_COLUMNS,
    INSTANCE_COLUMNS,
    PLAYER_COLUMNS,
    WEAPON_COLUMNS,
    Batch,
    batches,
)
from protheon.worker.writer import JobWriter, WriteResult
from tests.contract_cases import with_field


def _pgcr(instance_id: int, members: tuple[int, ...] = (9,), name: str = "n") -> bytes:
    pgcr: dict[str, Any] = with_field("_id", str(instance_id))
    template = pgcr["entries"][0]
    pgcr["entries"] = []
    for index, member in enumerate(members):
        entry = json.loads(json.dumps(template))
        entry["characterId"] = str(1000 + index)
        entry["player"]["destinyUserInfo"]["membershipId"] = str(member)
        entry["player"]["destinyUserInfo"]["displayName"] = name
        pgcr["entries"].append(entry)
    return json.dumps(pgcr).encode()


def _add_jobs(dsn: str, count: int) -> list[int]:
    with psycopg.connect(dsn) as conn:
        file_id = conn.execute(
            "INSERT INTO protheon.files (name, size_bytes, mtime) VALUES ('f.zst', 1, now())"
            " RETURNING file_id"
        ).fetchone()[0]  # type: ignore[index]
        return [
            conn.execute(
                "INSERT INTO protheon.jobs (file_id, seq, first_line, line_count, byte_size,"
                " raw_size) VALUES (%s, %s, 1, 1, 1, 1) RETURNING job_id",
                (file_id, seq),
            ).fetchone()[0]  # type: ignore[index]
            for seq in range(count)
        ]


def _write(dsn: str, job_id: int, lines: list[bytes], name: str = "w") -> WriteResult:
    writer = JobWriter(dsn, name)
    try:
        return writer.write(job_id, 1, lambda: batches(lines, job_id, batch_lines=3))
    finally:
        writer.close()


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def test_a_replayed_job_writes_nothing(pg_dsn: str) -> None:
    (job,) = _add_jobs(pg_dsn, 1)
    lines = [_pgcr(i, (1, 2)) for i in range(1, 8)] + [b"{broken"]
    first = _write(pg_dsn, job, lines)
    assert (first.pgcrs, first.entries, first.rejects, first.players) == (7, 14, 1, 2)
    again = _write(pg_dsn, job, lines)
    assert again.already_done
    assert _count(pg_dsn, "pgcr.instances") == 7 and _count(pg_dsn, "pgcr.entries") == 14
    assert _count(pg_dsn, "pgcr.weapons") == 14 and _count(pg_dsn, "protheon.rejects") == 1


def test_a_failed_job_leaves_no_trace(pg_dsn: str) -> None:
    (job,) = _add_jobs(pg_dsn, 1)

    def lines_then_failure() -> Any:
        yield _pgcr(1)
        yield _pgcr(2)
        yield b"{broken"
        yield _pgcr(3)
        raise OSError("connection to the master lost mid-chunk")

    writer = JobWriter(pg_dsn, "w")
    with pytest.raises(OSError):
        writer.write(job, 1, lambda: batches(lines_then_failure(), job, batch_lines=2))
    writer.close()
    for table in ("pgcr.instances", "pgcr.entries", "pgcr.players", "protheon.rejects"):
        assert _count(pg_dsn, table) == 0, table
    assert _write(pg_dsn, job, [_pgcr(1), _pgcr(2)]).pgcrs == 2


def test_duplicates_across_jobs_are_written_once_and_counted(pg_dsn: str) -> None:
    first_job, second_job = _add_jobs(pg_dsn, 2)
    _write(pg_dsn, first_job, [_pgcr(i) for i in range(1, 6)])
    second = _write(pg_dsn, second_job, [_pgcr(i) for i in range(4, 9)])
    assert (second.pgcrs, second.duplicates) == (3, 2)
    assert _count(pg_dsn, "pgcr.instances") == 8 and _count(pg_dsn, "pgcr.entries") == 8


def test_players_keep_the_names_of_their_latest_instance(pg_dsn: str) -> None:
    early, late = _add_jobs(pg_dsn, 2)
    _write(pg_dsn, late, [_pgcr(20, (9,), name="new")])
    _write(pg_dsn, early, [_pgcr(10, (9,), name="old")])  # loaded later, but older
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT display_name, last_instance_id FROM pgcr.players WHERE membership_id = 9"
        ).fetchone()
    assert row == ("new", 20)


def test_concurrent_jobs_with_overlapping_pgcrs_and_players(pg_dsn: str) -> None:
    """Many writers, same instances and players in different orders: no duplicate, no deadlock."""
    jobs = _add_jobs(pg_dsn, 4)
    members = tuple(range(1, 13))
    errors: list[BaseException] = []
    results: list[WriteResult] = []

    def run(index: int, job: int) -> None:
        ids = list(range(1, 121))
        if index % 2:
            ids.reverse()
        lines = [_pgcr(i, members[i % 3 : i % 3 + 6], name=f"j{index}") for i in ids]
        try:
            results.append(_write(pg_dsn, job, lines, name=f"w{index}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(result.pgcrs for result in results) == 120
    assert sum(result.duplicates for result in results) == 120 * 3
    assert _count(pg_dsn, "pgcr.instances") == 120
    assert _count(pg_dsn, "pgcr.entries") == 120 * 6
    assert _count(pg_dsn, "pgcr.players") == 8  # members 1..6, 2..7 and 3..8


def test_batch_without_rows_still_marks_the_job_done(pg_dsn: str) -> None:
    (job,) = _add_jobs(pg_dsn, 1)
    result = _write(pg_dsn, job, [b"", b"not json"])
    assert result.rejects == 1 and result.pgcrs == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(
            "SELECT status FROM protheon.jobs WHERE job_id = %s", (job,)
        ).fetchone() == ("done",)
    assert isinstance(Batch(job_id=job), Batch)


def test_every_value_lands_as_the_transform_made_it(pg_dsn: str) -> None:
    """Binary COPY names each column's type: every value must come back unchanged (ints of
    each width, reals, booleans, text, timestamps, arrays, NULLs)."""
    (job,) = _add_jobs(pg_dsn, 1)
    lines = [_pgcr(7, (9, 10), name="Ünïcode ✓"), _pgcr(8, (11,)), b'{"not": "a pgcr"}']
    (batch,) = batches(lines, job)
    writer = JobWriter(pg_dsn, "w")
    try:
        writer.write(job, 1, lambda: batches(lines, job), first_line=41)
    finally:
        writer.close()
    with psycopg.connect(pg_dsn) as conn:

        def table(name: str, columns: tuple[str, ...]) -> list[tuple[object, ...]]:
            return conn.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY 1, 2").fetchall()

        assert table("pgcr.instances", INSTANCE_COLUMNS) == sorted(batch.instances)  # type: ignore[type-var]
        assert table("pgcr.entries", ENTRY_COLUMNS) == sorted(batch.entries)  # type: ignore[type-var]
        assert table("pgcr.weapons", WEAPON_COLUMNS) == sorted(batch.weapons)  # type: ignore[type-var]
        assert table("pgcr.players", PLAYER_COLUMNS) == sorted(batch.players.values())  # type: ignore[type-var]
        assert conn.execute(
            "SELECT line_in_job, line_number, line_bytes, raw_line FROM protheon.rejects"
        ).fetchall() == [(3, 43, len(lines[2]), lines[2].decode())]


def test_the_ordered_retry_writes_what_a_streaming_attempt_would(pg_dsn: str) -> None:
    """The deadlock retry inserts all instances first, then re-transforms for the rest."""
    first, streamed, retried = _add_jobs(pg_dsn, 3)
    _write(pg_dsn, first, [_pgcr(5, (1, 2))])  # instance 5 is someone else's already
    lines = [_pgcr(i, (i, i + 1)) for i in (1, 2, 5, 3, 2, 4)] + [b"oops"]
    writer = JobWriter(pg_dsn, "w")
    try:
        make = lambda: batches(lines, retried, batch_lines=2)  # noqa: E731
        ordered = writer._write_once(retried, 1, make, lambda: None, 1, instances_first=True)
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("DELETE FROM pgcr.entries WHERE instance_id <> 5")
            conn.execute("DELETE FROM pgcr.weapons WHERE instance_id <> 5")
            conn.execute("DELETE FROM pgcr.instances WHERE instance_id <> 5")
            conn.execute("DELETE FROM protheon.rejects")
        streaming = writer.write(streamed, 1, lambda: batches(lines, streamed, batch_lines=2))
    finally:
        writer.close()
    # (players differ: the second write finds the first one's names already there)
    assert dataclasses.replace(ordered, players=0) == dataclasses.replace(streaming, players=0)
    assert (ordered.pgcrs, ordered.duplicates, ordered.entries, ordered.rejects) == (4, 2, 8, 1)
