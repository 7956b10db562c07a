"""Progress from the ledger: what ``protheon status`` prints and scripts read with ``--json``.

Counts come from the ledger's per-job totals, never from ``count(*)`` over the data tables,
so the command stays instant at billions of rows.
"""

from __future__ import annotations

import json
from typing import Any

from protheon import db

_SUMMARY = """
SELECT
  (SELECT count(*) FROM protheon.files) AS files_total,
  (SELECT count(*) FROM protheon.files WHERE status = 'done') AS files_done,
  (SELECT count(*) FROM protheon.files WHERE status = 'failed') AS files_failed,
  count(*) AS jobs_total,
  count(*) FILTER (WHERE status = 'done') AS jobs_done,
  count(*) FILTER (WHERE status = 'failed') AS jobs_failed,
  count(*) FILTER (WHERE status = 'running') AS jobs_running,
  coalesce(sum(pgcrs), 0) AS pgcrs_written,
  coalesce(sum(duplicates), 0) AS duplicates,
  coalesce(sum(entries), 0) AS entries_written,
  coalesce(sum(weapons), 0) AS weapons_written,
  coalesce(sum(rejects), 0) AS rejects,
  -- over the last minute, or over the time since the first of those jobs started if shorter
  coalesce(sum(pgcrs) FILTER (WHERE finished_at > now() - interval '1 minute'), 0)
    / greatest(1.0, least(60.0, extract(epoch FROM now() - min(started_at)
        FILTER (WHERE finished_at > now() - interval '1 minute'))))
    AS pgcrs_per_second,
  count(DISTINCT worker) FILTER (WHERE finished_at > now() - interval '5 minutes')
    AS workers_recent
FROM protheon.jobs
"""


def summary(dsn: str) -> dict[str, Any]:
    with db.connect(dsn, "protheon-status", autocommit=True) as conn:
        cur = conn.execute(_SUMMARY)
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        names = [column.name for column in cur.description]
    values = dict(zip(names, row, strict=True))
    values["pgcrs_per_second"] = round(float(values["pgcrs_per_second"]), 1)
    return {name: int(value) if name != "pgcrs_per_second" else value
            for name, value in values.items()}  # fmt: skip


def render(values: dict[str, Any]) -> str:
    def bar(done: int, total: int, width: int = 30) -> str:
        filled = width * done // total if total else 0
        return "[" + "#" * filled + "." * (width - filled) + "]"

    return "\n".join(
        [
            f"files  {bar(values['files_done'], values['files_total'])} "
            f"{values['files_done']}/{values['files_total']} done"
            + (f", {values['files_failed']} failed" if values["files_failed"] else ""),
            f"jobs   {bar(values['jobs_done'], values['jobs_total'])} "
            f"{values['jobs_done']}/{values['jobs_total']} done, {values['jobs_running']} running,"
            f" {values['jobs_failed']} failed",
            f"PGCRs  {values['pgcrs_written']:,} written ({values['duplicates']:,} duplicates"
            f" skipped), {values['pgcrs_per_second']:,.0f}/s over the last minute",
            f"rows   {values['entries_written']:,} entries, {values['weapons_written']:,} weapons",
            f"rejects {values['rejects']:,}   workers active (5 min): {values['workers_recent']}",
        ]
    )


def to_json(values: dict[str, Any]) -> str:
    return json.dumps(values, indent=2, sort_keys=True)
