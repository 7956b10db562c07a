"""The chaos run, short: workers SIGKILLed every few seconds, the master SIGKILLed once, the
RabbitMQ node and PostgreSQL restarted once, and nothing lost or duplicated (``make chaos``
is the long run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_a_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--files", "3", "--lines", "6000",
         "--chunk-lines", "250", "--kill-every", "3", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    def figure(name: str) -> int:
        found = re.search(rf"^{name}\s+([\d,]+)", result.stdout, re.MULTILINE)
        assert found, (name, result.stdout[-3000:])
        return int(found.group(1).replace(",", ""))

    assert figure("PGCRs lost") == figure("PGCRs duplicated") == 0
    assert figure("PGCRs written") == figure("PGCRs expected") > 15_000
    assert figure("rejects recorded") == figure("rejects expected") > 0
    assert figure("processes killed") >= 3, "the master and at least two workers"
    for fault in ("SIGKILL master", "restart RabbitMQ node", "restart PostgreSQL"):
        assert f"{fault} at" in result.stdout, fault
