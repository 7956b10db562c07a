"""Steps shared by the tests that run the whole pipeline as real processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

from tests.conftest import Processes, wait_for
from tests.oracle import read_expected


def gen(processes: Processes, out: Path, *args: str) -> None:
    processes.run("gen", "--out", str(out), *args)


def status(processes: Processes) -> dict[str, int]:
    result = processes.run("status", "--json")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def all_done(processes: Processes, files: int) -> dict[str, int] | None:
    values = status(processes)
    if values["files_total"] == files and values["files_done"] == files:
        return values
    return None


def assert_database_matches_source(dsn: str, sources: list[Path]) -> None:
    expected = read_expected(sources)
    with psycopg.connect(dsn) as conn:

        def rows(query: str) -> list[tuple[object, ...]]:
            return conn.execute(query).fetchall()

        instances = rows("SELECT instance_id FROM pgcr.instances")
        entries = rows("SELECT instance_id, character_id FROM pgcr.entries")
        weapons = rows("SELECT instance_id, character_id, weapon_id FROM pgcr.weapons")
        players = rows("SELECT membership_id FROM pgcr.players")
        rejects = rows(
            "SELECT f.name, r.line_number"
            " FROM protheon.rejects r JOIN protheon.files f USING (file_id)"
        )
    # Same sets and no duplicates: a list's length equal to its set's length.
    assert len(instances) == len(expected.instances)
    assert {row[0] for row in instances} == expected.instances
    assert len(entries) == len(expected.entries) and set(entries) == expected.entries
    assert len(weapons) == len(expected.weapons) and set(weapons) == expected.weapons
    assert {row[0] for row in players} == expected.players
    assert len(rejects) == len(expected.rejects) and set(rejects) == expected.rejects


@contextmanager
def weapons_lock(dsn: str) -> Iterator[None]:
    """Hold a lock that a worker's COPY into pgcr.weapons waits for: it then stops mid-job,
    inside its transaction, with the job's instances and entries written but not committed."""
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE pgcr.weapons IN SHARE MODE")
    try:
        yield
    finally:
        with suppress(psycopg.OperationalError):  # a PostgreSQL restart ended it already
            blocker.rollback()
        blocker.close()


def wait_blocked(dsn: str, worker_name: str, timeout: float = 60) -> None:
    """Wait until ``worker_name``'s database session waits on a lock."""
    with psycopg.connect(dsn, autocommit=True) as watch:
        wait_for(
            lambda: watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
                " AND wait_event_type = 'Lock'",
                (f"protheon-worker {worker_name}",),
            ).fetchone(),
            timeout,
            f"{worker_name} to wait on a lock",
        )


def blocked_in_lock(dsn: str, worker_name: str, timeout: float = 60) -> int:
    """Wait until ``worker_name`` waits on a lock inside a job; return that job's id."""
    wait_blocked(dsn, worker_name, timeout)
    with psycopg.connect(dsn, autocommit=True) as watch:
        row = watch.execute(
            "SELECT job_id FROM protheon.jobs WHERE status = 'running' AND worker = %s",
            (worker_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])
