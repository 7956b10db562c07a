"""Build grafana/dashboards/protheon.json from the panel list below.

Code rather than hand-edited JSON: panels share one layout and one datasource variable, and
the list reads as what the dashboard shows. Run ``python grafana/build_dashboard.py`` (or
``make dashboard``) after editing; a test fails if the JSON is stale, and another checks that
every query parses and, against a real Prometheus scraping a real run, returns data.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "protheon.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
HOSTS = 'host=~"$host"'


@dataclasses.dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    description: str = ""


def rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}[$__rate_interval]))"


ROWS: list[tuple[str, list[Panel]]] = [
    ("Load", [
        Panel("Progress", "percentunit", (Query("max(protheon_progress_ratio)"),), "stat", 4,
              "Lines loaded / lines estimated in all input files (ledger)."),
        Panel("ETA", "s", (Query("max(protheon_eta_seconds)"),), "stat", 4,
              "Time to finish at the last minute's pace."),
        Panel("Files and jobs", "short", (
            Query('max(protheon_files{status="done"})', "files done"),
            Query('max(protheon_files{status="total"})', "files"),
            Query("max(protheon_jobs_remaining)", "jobs remaining"),
        ), "stat", 8),
        Panel("Loaded", "short", (
            Query("max(protheon_loaded_pgcrs)", "PGCRs"),
            Query("max(protheon_loaded_rejects)", "rejects"),
        ), "stat", 8),
        Panel("PGCRs per second", "suffix: PGCRs/s", (
            Query(rate("protheon_pgcrs_written_total"), "new PGCRs"),
            Query(rate("protheon_duplicate_pgcrs_total"), "duplicates skipped"),
        ), width=12),
        Panel("Rows per second, by table", "suffix: rows/s",
              (Query(rate("protheon_rows_written_total", "table"), "{{table}}"),), width=12),
    ]),
    ("Workers", [
        Panel("PGCRs per second, by worker", "suffix: PGCRs/s",
              (Query(rate("protheon_pgcrs_written_total", "instance"), "{{instance}}"),),
              width=12, description="A worker far below the others is the slow one."),
        Panel("Job duration", "s", (
            Query("histogram_quantile(0.5, "
                  + rate("protheon_job_duration_seconds_bucket", "le") + ")", "p50"),
            Query("histogram_quantile(0.95, "
                  + rate("protheon_job_duration_seconds_bucket", "le") + ")", "p95"),
        ), width=12),
        Panel("Workers up", "short", (Query('sum(up{job="protheon-worker"})', "up"),
                                      Query('count(up{job="protheon-worker"})', "expected")),
              "stat", 6),
        Panel("Jobs in flight, by worker", "short",
              (Query("sum by (instance) (protheon_jobs_in_flight)", "{{instance}}"),), width=6),
        Panel("Watchdog stalled / draining", "bool", (
            Query("max by (instance) (protheon_watchdog_stalled)", "stalled {{instance}}"),
            Query("max by (instance) (protheon_draining)", "draining {{instance}}"),
        ), width=12, description="Stalled: pings withheld, systemd restarts it soon."),
    ]),
    ("Queue and failures", [
        Panel("Queue depth", "short", (
            Query("max(protheon_queue_messages)", "jobs waiting"),
            Query("sum(rabbitmq_queue_messages_unacked)", "jobs being worked (all queues)"),
            Query("max(protheon_dead_letters)", "dead letters"),
        ), width=8),
        Panel("Failures and redeliveries", "ops", (
            Query(rate("protheon_jobs_failed_total"), "failed attempts"),
            Query(rate("protheon_jobs_redelivered_total"), "redeliveries"),
            Query(rate("protheon_jobs_already_done_total"), "already done"),
        ), width=8),
        Panel("Rejected lines per second", "suffix: lines/s",
              (Query(rate("protheon_rejects_total"), "rejects"),), width=8),
        Panel("Chunk bytes streamed", "Bps", (
            Query(rate("protheon_chunk_served_bytes_total"), "served by the master"),
            Query(rate("protheon_chunk_received_bytes_total"), "received by workers"),
        ), width=12),
        Panel("Time from a file appearing to its first job", "s", (
            Query("histogram_quantile(0.95, "
                  + rate("protheon_file_first_job_seconds_bucket", "le") + ")", "p95"),
        ), width=12),
    ]),
    ("Hosts", [
        Panel("CPU busy", "percentunit", (
            Query(f'1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle", {HOSTS}}}'
                  "[$__rate_interval]))", "{{host}}"),
        )),
        Panel("Memory used", "percentunit", (
            Query(f"1 - sum by (host) (node_memory_MemAvailable_bytes{{{HOSTS}}})"
                  f" / sum by (host) (node_memory_MemTotal_bytes{{{HOSTS}}})", "{{host}}"),
        )),
        Panel("Disk used", "percentunit", (
            Query(f'1 - max by (host, mountpoint) (node_filesystem_avail_bytes{{{HOSTS},'
                  ' fstype!~"tmpfs|ramfs|overlay|squashfs"})'
                  f' / max by (host, mountpoint) (node_filesystem_size_bytes{{{HOSTS},'
                  ' fstype!~"tmpfs|ramfs|overlay|squashfs"})', "{{host}} {{mountpoint}}"),
        )),
        Panel("PostgreSQL commits per second", "ops", (
            Query(rate("pg_stat_database_xact_commit", "datname"), "{{datname}}"),
        ), width=12),
        Panel("Process memory (RSS)", "bytes", (
            Query('max by (job, instance) (process_resident_memory_bytes{job=~"protheon-.*"})',
                  "{{job}} {{instance}}"),
        ), width=12),
    ]),
]  # fmt: skip


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 5 if panel.kind == "stat" else 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {"datasource": DATASOURCE, "expr": query.expr, "legendFormat": query.legend,
             "refId": chr(ord("A") + index)}
            for index, query in enumerate(panel.queries)
        ],
    }  # fmt: skip
    if panel.kind == "stat":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    else:
        body["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    return body


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            body = _panel(panel, panel_id, x, y)
            panels.append(body)
            panel_id, x = panel_id + 1, x + panel.width
            row_height = max(row_height, body["gridPos"]["h"])
        y += row_height
    return {
        "uid": "protheon",
        "title": "Protheon",
        "description": "Loading PGCR dumps: progress, throughput, workers, failures, hosts.",
        "tags": ["protheon"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": True,
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "host",
                    "label": "Host",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(node_uname_info, host)", "refId": "host"},
                    "definition": "label_values(node_uname_info, host)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
