"""Progress from the ledger: what ``protheon status`` prints, scripts read with ``--json``, and
the master exports as gauges (one place computes it).

Counts come from the ledger's per-job totals, never from ``count(*)`` over the data tables, so
this stays instant at billions of rows. Progress is measured in lines; chunks not yet counted
(passed through) are estimated from their decompressed size, files not yet split from their
compressed size, at the ratios seen so far.
"""

from __future__ import annotations

import json
import time
from typing import Any

from protheon import db

_SUMMARY = """
WITH jobs AS (
  SELECT
    count(*) AS jobs_total,
    count(*) FILTER (WHERE status = 'done') AS jobs_done,
    count(*) FILTER (WHERE status = 'failed') AS jobs_failed,
    count(*) FILTER (WHERE status = 'running') AS jobs_running,
    coalesce(sum(pgcrs), 0) AS pgcrs_written,
    coalesce(sum(duplicates), 0) AS duplicates,
    coalesce(sum(entries), 0) AS entries_written,
    coalesce(sum(weapons), 0) AS weapons_written,
    coalesce(sum(rejects), 0) AS rejects,
    coalesce(sum(line_count) FILTER (WHERE status = 'done'), 0) AS lines_done,
    -- passed-through chunks are counted by their worker: until then, estimated from raw size
    coalesce(sum(line_count), 0) AS lines_counted,
    coalesce(sum(raw_size) FILTER (WHERE line_count IS NOT NULL), 0) AS raw_counted,
    coalesce(sum(raw_size) FILTER (WHERE line_count IS NULL), 0) AS raw_uncounted,
    coalesce(sum(line_count) FILTER (WHERE file_status <> 'splitting'), 0) AS lines_counted_split,
    coalesce(sum(raw_size) FILTER (WHERE line_count IS NULL AND file_status <> 'splitting'), 0)
      AS raw_uncounted_split,
    coalesce(sum(byte_size), 0) AS chunk_bytes,
    -- over the last minute, or since the first of those jobs started if that is shorter
    greatest(1.0, least(60.0, extract(epoch FROM now() - min(started_at)
        FILTER (WHERE finished_at > now() - interval '1 minute')))) AS window_seconds,
    coalesce(sum(pgcrs) FILTER (WHERE finished_at > now() - interval '1 minute'), 0)
      AS pgcrs_last_minute,
    coalesce(sum(line_count) FILTER (WHERE finished_at > now() - interval '1 minute'), 0)
      AS lines_last_minute
  FROM protheon.jobs JOIN (SELECT file_id, status AS file_status FROM protheon.files) f
    USING (file_id)
), files AS (
  SELECT
    count(*) AS files_total,
    count(*) FILTER (WHERE status = 'done') AS files_done,
    count(*) FILTER (WHERE status = 'failed') AS files_failed,
    coalesce(sum(size_bytes), 0) AS bytes_total,
    coalesce(sum(size_bytes) FILTER (WHERE status <> 'splitting'), 0) AS bytes_split
  FROM protheon.files
)
SELECT * FROM jobs, files
"""

_WORKERS = """
SELECT worker, count(*) AS jobs, coalesce(sum(pgcrs), 0) AS pgcrs,
       max(finished_at) AS last_seen
FROM protheon.jobs
WHERE worker IS NOT NULL AND greatest(started_at, finished_at) > now() - interval '5 minutes'
GROUP BY worker ORDER BY worker
"""


def summary(dsn: str) -> dict[str, Any]:
    with db.connect(dsn, "protheon-status", autocommit=True) as conn:
        cur = conn.execute(_SUMMARY)
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        raw = dict(zip([column.name for column in cur.description], row, strict=True))
        workers = conn.execute(_WORKERS).fetchall()
    window = float(raw.pop("window_seconds"))
    values: dict[str, Any] = {
        key: int(raw[key])
        for key in ("files_total", "files_done", "files_failed", "jobs_total", "jobs_done",
                    "jobs_failed", "jobs_running", "pgcrs_written", "duplicates",
                    "entries_written", "weapons_written", "rejects", "lines_done")
    }  # fmt: skip
    values["pgcrs_per_second"] = round(float(raw["pgcrs_last_minute"]) / window, 1)
    lines_per_second = float(raw["lines_last_minute"]) / window
    values["lines_total_estimate"] = _estimate_lines(raw)
    remaining = max(values["lines_total_estimate"] - values["lines_done"], 0)
    values["progress"] = (
        round(values["lines_done"] / values["lines_total_estimate"], 4)
        if values["lines_total_estimate"] else 0.0
    )  # fmt: skip
    values["eta_seconds"] = (
        round(remaining / lines_per_second) if remaining and lines_per_second else None
    )
    if not remaining and values["files_total"]:
        values["eta_seconds"] = 0
    values["workers_recent"] = len(workers)
    values["workers"] = [
        {"name": name, "jobs_5m": int(jobs), "pgcrs_5m": int(pgcrs),
         "last_seen": last.isoformat() if last else None}
        for name, jobs, pgcrs, last in workers
    ]  # fmt: skip
    return values


def _estimate_lines(raw: dict[str, Any]) -> int:
    """Lines of split files, plus the rest estimated from compressed size."""
    raw_counted = int(raw["raw_counted"])
    per_raw_byte = int(raw["lines_counted"]) / raw_counted if raw_counted else 0.0
    known_lines = int(raw["lines_counted_split"]) + int(raw["raw_uncounted_split"]) * per_raw_byte
    lines_cut = int(raw["lines_counted"]) + int(raw["raw_uncounted"]) * per_raw_byte
    known_bytes = int(raw["bytes_split"])
    unknown_bytes = int(raw["bytes_total"]) - known_bytes
    if known_bytes:
        per_byte = known_lines / known_bytes
    elif int(raw["chunk_bytes"]):  # nothing fully split yet: chunks compress about alike
        per_byte = lines_cut / int(raw["chunk_bytes"])
    else:
        return round(known_lines)
    return round(known_lines + unknown_bytes * per_byte)


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "unknown (no progress in the last minute)"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _bar(fraction: float, width: int = 30) -> str:
    filled = min(width, int(width * fraction))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render(values: dict[str, Any]) -> str:
    def ratio(done: int, total: int) -> float:
        return done / total if total else 0.0

    lines = [
        f"progress {_bar(values['progress'])} {values['progress'] * 100:5.1f}%  "
        f"ETA {_duration(values['eta_seconds'])}",
        f"files    {_bar(ratio(values['files_done'], values['files_total']))} "
        f"{values['files_done']}/{values['files_total']} done"
        + (f", {values['files_failed']} failed" if values["files_failed"] else ""),
        f"jobs     {_bar(ratio(values['jobs_done'], values['jobs_total']))} "
        f"{values['jobs_done']}/{values['jobs_total']} done, {values['jobs_running']} running,"
        f" {values['jobs_failed']} failed",
        f"PGCRs    {values['pgcrs_written']:,} written ({values['duplicates']:,} duplicates"
        f" skipped), {values['pgcrs_per_second']:,.0f}/s over the last minute",
        f"rows     {values['entries_written']:,} entries, {values['weapons_written']:,} weapons",
        f"rejects  {values['rejects']:,}",
        f"workers  {values['workers_recent']} active in the last 5 minutes",
    ]
    for worker in values["workers"]:
        lines.append(
            f"  {worker['name']:<32} {worker['jobs_5m']:>5} jobs  {worker['pgcrs_5m']:>10,} PGCRs"
        )
    return "\n".join(lines)


def to_json(values: dict[str, Any]) -> str:
    return json.dumps(values, indent=2, sort_keys=True)


def watch(dsn: str, interval: float = 2.0) -> None:
    """Redraw until Ctrl-C."""
    try:
        while True:
            text = render(summary(dsn))
            print("\033[H\033[2J" + time.strftime("%H:%M:%S ") + "protheon status\n\n" + text,
                  flush=True)  # fmt: skip
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
