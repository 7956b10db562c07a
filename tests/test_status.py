"""``protheon status`` mid-run (held still by a lock) and after completion."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Processes, free_port, wait_for
from tests.oracle import read_expected
from tests.pipeline import all_done, gen, status, wait_blocked, weapons_lock

KEYS = {"files_total", "files_done", "jobs_total", "jobs_done", "jobs_failed", "pgcrs_written",
        "rejects", "pgcrs_per_second", "eta_seconds", "progress", "workers"}  # fmt: skip


def test_status_mid_run_and_after(processes: Processes, pg_dsn: str, tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    gen(processes, inbox, "--files", "2", "--lines", "2000", "--seed", "61", "--bad-rate", "0.01")
    port = free_port()
    processes.start("master", "master", "--input", str(inbox), "--workspace",
                    str(tmp_path / "ws"), "--listen", f"127.0.0.1:{port}",
                    "--chunk-lines", "250")  # fmt: skip
    processes.start("worker", "worker", "--master", f"127.0.0.1:{port}", "--concurrency", "1",
                    "--worker-name", "w1")  # fmt: skip
    wait_for(lambda: status(processes)["jobs_done"] >= 3, 60, "a few jobs")
    with weapons_lock(pg_dsn):
        wait_blocked(pg_dsn, "w1")
        middle = status(processes)
        text = processes.run("status").stdout
    assert set(middle) >= KEYS
    assert 0 < middle["jobs_done"] < middle["jobs_total"] == 16
    assert 0 < middle["progress"] < 1
    assert middle["pgcrs_per_second"] > 0 and middle["eta_seconds"] > 0
    assert [worker["name"] for worker in middle["workers"]] == ["w1"]
    assert "ETA" in text and "w1" in text and "%" in text

    final = wait_for(lambda: all_done(processes, 2), 60, "the load to finish")
    assert isinstance(final, dict)
    expected = read_expected(sorted(inbox.glob("*.zst")))
    assert final["progress"] == 1.0 and final["eta_seconds"] == 0
    assert final["jobs_done"] == final["jobs_total"] == 16 and final["jobs_failed"] == 0
    assert final["pgcrs_written"] == len(expected.instances)
    assert final["rejects"] == len(expected.rejects)
    assert final["lines_done"] == final["lines_total_estimate"] == 4000


def test_status_watch_redraws_until_interrupted(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    watch = subprocess.Popen(
        [sys.executable, "-m", "protheon", "status", "--watch"],
        env=processes.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(4.5)
    watch.send_signal(signal.SIGINT)
    out, _ = watch.communicate(timeout=10)
    assert watch.returncode == 0
    assert out.count("protheon status") >= 2, "redrawn at least twice"
    assert "progress" in out and "\033[2J" in out
