"""sd_notify through a real datagram socket, and the progress-gated watchdog."""

from __future__ import annotations

import os
import socket
import time
import uuid

from protheon.sdnotify import Notifier, Progress, Watchdog
from tests.conftest import NotifySocket, wait_for


def test_messages_arrive_as_systemd_reads_them(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env())
    assert notifier.enabled
    notifier.ready("consuming")
    notifier.status("job 7")
    notifier.stopping("draining")
    notifier.extend_timeout(12.5)
    wait_for(lambda: notify_socket.fields("EXTEND_TIMEOUT_USEC"), 5, "the last message")
    assert [v for _, v in notify_socket.fields("READY")] == ["1"]
    assert [v for _, v in notify_socket.fields("MAINPID")] == [str(os.getpid())]
    assert [v for _, v in notify_socket.fields("STATUS")] == ["consuming", "job 7", "draining"]
    assert [v for _, v in notify_socket.fields("STOPPING")] == ["1"]
    assert [v for _, v in notify_socket.fields("EXTEND_TIMEOUT_USEC")] == ["12500000"]


def test_abstract_socket_addresses() -> None:
    name = f"protheon-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        Notifier({"NOTIFY_SOCKET": "@" + name}).send("READY=1")
        assert server.recv(100) == b"READY=1"


def test_without_notify_socket_everything_is_silently_off() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.send("READY=1")
    assert Watchdog.start_for(notifier, Progress()) is None


def test_a_dead_socket_never_raises() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert notifier.send("READY=1") is False


def test_watchdog_pid_of_another_process_disables_the_watchdog() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_seconds == 1.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert Notifier({**env, "WATCHDOG_USEC": "0"}).watchdog_seconds is None


def test_watchdog_pings_only_while_progress_is_fresh(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env(watchdog_seconds=0.4))  # ping every 0.2 s
    progress = Progress()
    watchdog = Watchdog.start_for(notifier, progress)
    assert watchdog is not None
    try:
        beating_until = time.monotonic() + 1.0
        while time.monotonic() < beating_until:
            progress.beat()
            time.sleep(0.05)
        pings_while_beating = len(notify_socket.fields("WATCHDOG"))
        assert pings_while_beating >= 3
        stalled_at = time.monotonic()
        time.sleep(1.2)  # no beats: pings must stop within one interval
        late = notify_socket.fields("WATCHDOG", since=stalled_at + 0.3)
        assert late == [], "pinged while stalled"
        assert watchdog.stalled
        resumed_at = time.monotonic()
        while time.monotonic() < resumed_at + 0.8:
            progress.beat()
            time.sleep(0.05)
        assert notify_socket.fields("WATCHDOG", since=resumed_at), "pings resume with progress"
        assert not watchdog.stalled
    finally:
        watchdog.stop()
