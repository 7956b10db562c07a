"""PostgreSQL connections and the versioned, idempotent schema migrations."""

from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every concurrent `protheon db migrate`.
_MIGRATION_LOCK = 0x70726F74  # "prot"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


# A peer that vanished (host powered off, cable pulled) is noticed in about a minute instead of
# the kernel's two hours; libpq ignores these on Unix sockets. A DSN can still override them.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
               "keepalives_count": 3}  # fmt: skip


def connect(dsn: str, application_name: str, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection named for its purpose, so `pg_stat_activity` tells who is who."""
    given = psycopg.conninfo.conninfo_to_dict(dsn)
    options = {key: value for key, value in _KEEPALIVES.items() if key not in given}
    conninfo = psycopg.conninfo.make_conninfo(dsn, application_name=application_name, **options)
    return psycopg.connect(conninfo, autocommit=autocommit)


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every bundled migration, in order."""
    found = []
    for entry in resources.files("protheon.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names.

    An advisory lock serialises concurrent runs (several hosts starting at once), so running it
    again or in parallel is harmless.
    """
    applied: list[str] = []
    with connect(dsn, "protheon-migrate", autocommit=True) as conn:
        with conn.transaction():
            # Under the lock too: concurrent CREATE ... IF NOT EXISTS still collide in the catalog.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS protheon")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS protheon.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for version, name, text in available_migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                done = conn.execute(
                    "SELECT 1 FROM protheon.schema_migrations WHERE version = %s", (version,)
                ).fetchone()
                if done:
                    continue
                log.info("applying migration %s", name)
                conn.execute(text.encode())
                conn.execute(
                    "INSERT INTO protheon.schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(name)
    return applied


def with_database(dsn: str, dbname: str) -> str:
    """The same connection settings, pointed at another database."""
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def create_database(dsn: str) -> bool:
    """Create the database the DSN names, if missing (local setups; Ansible does it on a lab)."""
    dbname = str(psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or "")
    if not dbname:
        raise ValueError("the DSN names no database")
    admin_dsn = with_database(dsn, "postgres")
    with connect(admin_dsn, "protheon-create", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True
