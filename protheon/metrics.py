"""Prometheus metrics shared by master and workers: the HTTP endpoint and lifecycle gauges.

Every process serves its own endpoint (a worker host with four processes has four ports,
``worker_metrics_port + index - 1``): per-process series are what shows which worker is slow,
and there is no shared state to get wrong across processes.
"""

from __future__ import annotations

import logging
import platform

from prometheus_client import Gauge, Info, start_http_server

from protheon import __version__
from protheon.sdnotify import Progress, Watchdog

log = logging.getLogger(__name__)

BUILD = Info("protheon_build", "Protheon build: version and Python")
DRAINING = Gauge("protheon_draining", "1 while draining after SIGTERM, else 0")
WATCHDOG_STALLED = Gauge(
    "protheon_watchdog_stalled", "1 while watchdog pings are withheld for lack of progress"
)
PROGRESS_AGE = Gauge(
    "protheon_progress_age_seconds", "Seconds since the work last made progress"
)  # fmt: skip


def serve(host: str, port: int, role: str) -> bool:
    """Start the endpoint (port 0: disabled). A port in use is logged, not fatal: the load
    matters more than its telemetry."""
    BUILD.info({"version": __version__, "python": platform.python_version(), "role": role})
    if port == 0:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics endpoint %s:%d unavailable: %s", host, port, exc)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True


def track_lifecycle(progress: Progress, watchdog: Watchdog | None) -> None:
    PROGRESS_AGE.set_function(progress.age)
    WATCHDOG_STALLED.set_function(lambda: float(watchdog is not None and watchdog.stalled))
