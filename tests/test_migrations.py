"""Schema migrations on real, freshly created PostgreSQL databases."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from protheon import db
from tests.conftest import ADMIN_DSN, drop_database, dsn_for, run_protheon

RECORDED = [
    (1, "0001_initial.sql"),
    (2, "0002_passthrough_chunks.sql"),
    (3, "0003_lines_numbered_later.sql"),
]
MIGRATIONS = [name for _, name in RECORDED]


def _exists(name: str) -> bool:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


@pytest.fixture
def new_database() -> Iterator[Callable[[], str]]:
    """Make empty databases (not from the migrated template); all are dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        name = f"protheon_m_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        names.append(name)
        return dsn_for(name)

    yield make
    for name in names:
        drop_database(name)


@pytest.fixture
def empty_dsn(new_database: Callable[[], str]) -> str:
    return new_database()


def _recorded(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT version, name FROM protheon.schema_migrations ORDER BY version"
        ).fetchall()
    return [(int(v), str(n)) for v, n in rows]


def test_bundled_migrations() -> None:
    found = db.available_migrations()
    assert [(version, name) for version, name, _ in found] == RECORDED
    assert "CREATE TABLE pgcr.instances" in found[0][2]


def test_migrate_applies_once(empty_dsn: str) -> None:
    assert db.migrate(empty_dsn) == MIGRATIONS
    assert _recorded(empty_dsn) == RECORDED
    assert db.migrate(empty_dsn) == []
    assert _recorded(empty_dsn) == RECORDED


def test_concurrent_migrations_on_a_new_database(new_database: Callable[[], str]) -> None:
    for _ in range(3):  # the race loses nearly every time; three rounds make it certain
        _migrate_concurrently(new_database(), threads=2)


def test_concurrent_migrations_on_a_bootstrapped_database(empty_dsn: str) -> None:
    """Past the bootstrap, the advisory lock serialises runs: 0001 is applied exactly once."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA protheon")
        conn.execute(
            "CREATE TABLE protheon.schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    _migrate_concurrently(empty_dsn, threads=4)


def _migrate_concurrently(dsn: str, threads: int) -> None:
    barrier = threading.Barrier(threads)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(db.migrate(dsn))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors, f"a concurrent migrate failed: {errors[0]!r}"
    applied = [name for result in results for name in result]
    assert sorted(applied) == MIGRATIONS, "each migration applied exactly once"
    assert _recorded(dsn) == RECORDED


PRIMARY_KEYS = {
    ("pgcr", "instances"): ["instance_id"],
    ("pgcr", "entries"): ["instance_id", "character_id"],
    ("pgcr", "weapons"): ["instance_id", "character_id", "weapon_id"],
    ("pgcr", "players"): ["membership_id"],
    ("protheon", "files"): ["file_id"],
    ("protheon", "jobs"): ["job_id"],
    ("protheon", "rejects"): ["reject_id"],
    ("protheon", "schema_migrations"): ["version"],
}


def test_tables_and_keys(empty_dsn: str) -> None:
    db.migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('pgcr', 'protheon') AND table_type = 'BASE TABLE'"
        ).fetchall()
        keys: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in conn.execute(
            "SELECT tc.table_schema, tc.table_name, k.column_name"
            " FROM information_schema.table_constraints tc"
            " JOIN information_schema.key_column_usage k USING"
            "  (constraint_schema, constraint_name, table_schema, table_name)"
            " WHERE tc.constraint_type = 'PRIMARY KEY'"
            "  AND tc.table_schema IN ('pgcr', 'protheon')"
            " ORDER BY tc.table_schema, tc.table_name, k.ordinal_position"
        ).fetchall():
            keys.setdefault((schema, table), []).append(column)
        unique_indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'protheon'"
                " AND tablename = 'rejects'"
            ).fetchall()
        }
    assert set(tables) == set(PRIMARY_KEYS)
    assert keys == PRIMARY_KEYS
    assert any(
        d.startswith("CREATE UNIQUE INDEX") and d.endswith("(file_id, line_number)")
        for d in unique_indexes
    ), unique_indexes


def test_rejects_are_unique_per_file_line(empty_dsn: str) -> None:
    db.migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        file_id = conn.execute(
            "INSERT INTO protheon.files (name, size_bytes, mtime) VALUES ('a', 1, now())"
            " RETURNING file_id"
        ).fetchone()
        assert file_id is not None
        job_id = conn.execute(
            "INSERT INTO protheon.jobs (file_id, seq, first_line, line_count, byte_size,"
            " raw_size) VALUES (%s, 0, 1, 10, 1, 1) RETURNING job_id",
            (file_id[0],),
        ).fetchone()
        assert job_id is not None
        insert = (
            "INSERT INTO protheon.rejects (file_id, job_id, line_in_job, line_number, error,"
            " line_bytes, raw_line) VALUES (%s, %s, %s, %s, 'bad', 3, 'bad')"
        )
        conn.execute(insert, (file_id[0], job_id[0], 4, 4))
        conn.execute(insert, (file_id[0], job_id[0], 5, 5))
        conn.execute(insert, (file_id[0], job_id[0], 6, None))  # numbered later
        conn.execute(insert, (file_id[0], job_id[0], 7, None))
        for duplicate in ((8, 4), (4, 9)):  # the same file line; the same line of the job
            with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
                conn.execute(insert, (file_id[0], job_id[0], *duplicate))


# -- the command line ---------------------------------------------------------------------------


def _protheon(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTHEON_")}
    env["PROTHEON_PG_DSN"] = dsn
    return run_protheon(*args, env=env)


def test_cli_db_migrate(empty_dsn: str) -> None:
    first = _protheon(empty_dsn, "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "applied: " + ", ".join(MIGRATIONS)
    second = _protheon(empty_dsn, "db", "migrate")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema is up to date"
    assert _recorded(empty_dsn) == RECORDED


def test_cli_db_create() -> None:
    name = f"protheon_c_{uuid.uuid4().hex[:10]}"
    try:
        assert not _exists(name)
        created = _protheon(dsn_for(name), "db", "create")
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip() == "database created"
        assert _exists(name)
        again = _protheon(dsn_for(name), "db", "create")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "database already exists"
        assert db.migrate(dsn_for(name)) == MIGRATIONS  # a usable, empty database
    finally:
        drop_database(name)
