"""The benchmark still runs end to end (on tiny data; its numbers are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_prints_its_table_on_tiny_data(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--files", "2", "--lines", "600",
         "--chunk-lines", "300", "--naive-lines", "50", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for scenario in ("(a) ceiling, 1 process", "(a) ceiling, 2 processes",
                     "(b) Protheon, master + 2 workers", "(c) naive INSERT per row"):  # fmt: skip
        assert scenario in result.stdout
    assert "master CPU-s per GB" in result.stdout and "pipeline / naive" in result.stdout
