"""A tiny stdlib sd_notify client, with a watchdog that pings only while work progresses.

Like gunicorn's systemd helper, it is a few lines over an AF_UNIX datagram socket instead of a
C binding. Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=`` is not notify) every call
is a no-op, so code can notify unconditionally.

systemd's watchdog restarts a service that stops pinging. Pinging from a timer thread alone
would prove only that the timer thread lives; here the pinger asks a ``Progress`` clock, which
the real work beats (every gRPC piece received, every batch written, every idle poll). A worker
stuck in a hung database call or a stalled stream stops beating, the pings stop, and systemd
restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self.watchdog_seconds = _watchdog_seconds(environ)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False (never an exception) if it fails."""
        if not self._address:
            return False
        message = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)
                self._socket.sendto(message, self._address)
            except OSError as exc:
                log.debug("sd_notify failed: %s", exc)
                return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for ``seconds`` more before it gives up on a start or stop."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC as seconds, if the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


class Progress:
    """A clock the work beats; its age says how long since the work last moved."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last


class Watchdog(threading.Thread):
    """Pings at half the watchdog interval while ``progress`` is younger than that half."""

    def __init__(self, notifier: Notifier, progress: Progress) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.notifier = notifier
        self.progress = progress
        self.interval = (notifier.watchdog_seconds or 0) / 2
        self._stop_event = threading.Event()
        self.stalled = False

    @classmethod
    def start_for(cls, notifier: Notifier, progress: Progress) -> Watchdog | None:
        """Start pinging if systemd asked for a watchdog; None otherwise."""
        if not notifier.enabled or notifier.watchdog_seconds is None:
            return None
        watchdog = cls(notifier, progress)
        watchdog.start()
        return watchdog

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            age = self.progress.age()
            if age < self.interval:
                if self.stalled:
                    log.warning("progress resumed; watchdog pings resume")
                self.stalled = False
                self.notifier.send("WATCHDOG=1")
            elif not self.stalled:
                self.stalled = True
                log.error("no progress for %.1fs: withholding watchdog pings", age)

    def stop(self) -> None:
        self._stop_event.set()
