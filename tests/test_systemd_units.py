"""The unit files: clean under ``systemd-analyze verify`` (stderr, since it exits 0 on some
errors), hardened (``systemd-analyze security`` exposure ≤ 2.5), and consistent with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protheon.config import Settings

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICES = ("protheon-master.service", "protheon-worker@.service")
INSTALLED_BINARY = "/opt/protheon/venv/bin/protheon"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _local_copies(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this venv's binary (verify needs it to exist)."""
    binary = str(Path(sys.executable).parent / "protheon")
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_BINARY, binary))
    template = tmp_path / "protheon-worker@.service"
    shutil.copy(template, tmp_path / "protheon-worker@1.service")
    return tmp_path


def _verify(folder: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_units_verify_without_a_word_on_stderr(tmp_path: Path) -> None:
    folder = _local_copies(tmp_path)
    result = _verify(folder, "protheon-master.service", "protheon-worker@1.service",
                     "protheon-workers.target")  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_verify_check_itself_catches_errors_that_exit_0(tmp_path: Path) -> None:
    (tmp_path / "broken.service").write_text(
        "[Service]\nExecStart=/bin/true\nType=notfy\nWatchdogSecs=5\n"
    )
    result = _verify(tmp_path, "broken.service")
    assert result.returncode == 0, "systemd-analyze exits 0 here: stderr is what tells"
    assert "Failed to parse service type" in result.stderr and "WatchdogSecs" in result.stderr


@pytest.mark.parametrize("name", ["protheon-master.service", "protheon-worker@1.service"])
def test_exposure_is_ok(tmp_path: Path, name: str) -> None:
    folder = _local_copies(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", name],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5 and match.group(2) == "OK", match.group(0)


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_notify_watchdog_restart_and_drain_in_time(name: str) -> None:
    unit = _directives(name)
    assert unit["Type"] == ["notify"]
    assert unit["Restart"] == ["on-failure"]
    assert int(unit["WatchdogSec"][0]) >= 10
    assert int(unit["TimeoutStopSec"][0]) > Settings().drain_seconds, "room to drain"
    assert unit["KillMode"] == ["mixed"], "SIGTERM to the main process only, then SIGKILL all"
    assert unit["User"] == ["protheon"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"] and unit["CapabilityBoundingSet"] == [""]
    assert unit["ExecStart"][0].startswith(INSTALLED_BINARY)


def test_worker_instances_belong_to_the_target() -> None:
    worker = _directives("protheon-worker@.service")
    assert worker["PartOf"] == ["protheon-workers.target"]
    assert worker["WantedBy"] == ["protheon-workers.target"]
    assert "--concurrency 1" in worker["ExecStart"][0], "one process per unit instance"
    assert _directives("protheon-workers.target")["WantedBy"] == ["multi-user.target"]
