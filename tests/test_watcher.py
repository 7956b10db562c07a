"""The input watcher reports a file only once it has stopped changing for ``settle_seconds``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from protheon.master.watcher import InputFile, InputWatcher, changed_since

SETTLE = 0.2


def _names(found: list[InputFile]) -> list[str]:
    return [f.name for f in found]


def test_new_file_is_ready_only_after_settling(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(b"12345")
    watcher = InputWatcher(tmp_path, SETTLE)

    started = time.monotonic()
    assert watcher.scan(set()) == []
    assert watcher.scan(set()) == []  # seen, unchanged, but not for long enough
    time.sleep(SETTLE / 2)
    if time.monotonic() - started < SETTLE:
        assert watcher.scan(set()) == []
    time.sleep(SETTLE)

    found = watcher.scan(set())
    assert len(found) == 1
    ready = found[0]
    stat = path.stat()
    assert ready.name == "a.jsonl.zst"
    assert ready.path == path
    assert ready.size == 5
    assert ready.mtime == datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)
    assert ready.mtime.tzinfo is not None
    # Still complete on the next scan (the master passes it as known from then on).
    assert _names(watcher.scan(set())) == ["a.jsonl.zst"]


def test_zero_settle_reports_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.zst").write_bytes(b"x")
    assert _names(InputWatcher(tmp_path, 0).scan(set())) == ["a.zst"]


def test_growing_file_is_not_reported(tmp_path: Path) -> None:
    path = tmp_path / "growing.zst"
    path.write_bytes(b"x")
    watcher = InputWatcher(tmp_path, SETTLE)
    assert watcher.scan(set()) == []

    deadline = time.monotonic() + 3 * SETTLE
    while time.monotonic() < deadline:  # grows for longer than the settle time
        time.sleep(SETTLE / 4)
        with path.open("ab") as fh:
            fh.write(b"more")
        assert watcher.scan(set()) == []

    time.sleep(SETTLE * 1.25)
    found = watcher.scan(set())
    assert _names(found) == ["growing.zst"]
    assert found[0].size == path.stat().st_size > 1


def test_mtime_change_with_same_size_restarts_the_settle_time(tmp_path: Path) -> None:
    path = tmp_path / "a.zst"
    path.write_bytes(b"abc")
    watcher = InputWatcher(tmp_path, SETTLE)
    assert watcher.scan(set()) == []
    time.sleep(SETTLE * 1.25)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten in place
    assert watcher.scan(set()) == []
    time.sleep(SETTLE * 1.25)
    assert _names(watcher.scan(set())) == ["a.zst"]


def test_file_removed_and_recreated_must_settle_again(tmp_path: Path) -> None:
    path = tmp_path / "a.zst"
    path.write_bytes(b"abc")
    watcher = InputWatcher(tmp_path, SETTLE)
    watcher.scan(set())
    time.sleep(SETTLE * 1.25)
    assert _names(watcher.scan(set())) == ["a.zst"]

    path.unlink()
    assert watcher.scan(set()) == []
    path.write_bytes(b"xyz")  # written just now: it must settle again
    assert watcher.scan(set()) == []
    time.sleep(SETTLE * 1.25)
    assert _names(watcher.scan(set())) == ["a.zst"]


def test_a_file_renamed_in_long_after_it_was_written_is_ready_at_once(tmp_path: Path) -> None:
    """rsync and `protheon gen` write under a temporary name, then rename: no wait needed."""
    staging = tmp_path / ".a.zst.part"
    staging.write_bytes(b"abc")
    old = time.time() - SETTLE * 2
    os.utime(staging, (old, old))
    watcher = InputWatcher(tmp_path, SETTLE)
    assert watcher.scan(set()) == []
    staging.rename(tmp_path / "a.zst")
    assert _names(watcher.scan(set())) == ["a.zst"]


def test_temporary_hidden_and_foreign_names_are_ignored(tmp_path: Path) -> None:
    for name in (
        ".hidden.jsonl.zst",
        ".a.zst.part",
        "b.zst.part",
        "c.zst.tmp",
        "d.zst.partial",
        "e.part",
        "f.tmp",
        "g.jsonl",
        "h.zst.bak",
        "i.zstd",
        "zst",
        "good.jsonl.zst",
    ):
        (tmp_path / name).write_bytes(b"data")
    (tmp_path / "dir.zst").mkdir()
    (tmp_path / "dir.zst" / "inner.zst").write_bytes(b"data")

    watcher = InputWatcher(tmp_path, 0)
    assert _names(watcher.scan(set())) == ["good.jsonl.zst"]


def test_known_names_are_skipped(tmp_path: Path) -> None:
    for name in ("a.zst", "b.zst", "c.zst"):
        (tmp_path / name).write_bytes(b"data")
    watcher = InputWatcher(tmp_path, 0)
    assert _names(watcher.scan({"a.zst", "c.zst"})) == ["b.zst"]
    assert watcher.scan({"a.zst", "b.zst", "c.zst"}) == []
    assert _names(watcher.scan(set())) == ["a.zst", "b.zst", "c.zst"]


def test_missing_folder_returns_nothing_then_works_once_created(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    watcher = InputWatcher(folder, 0)
    assert watcher.scan(set()) == []
    folder.mkdir()
    (folder / "a.zst").write_bytes(b"x")
    assert _names(watcher.scan(set())) == ["a.zst"]


def test_ready_files_come_sorted_by_name(tmp_path: Path) -> None:
    names = [
        "12000003000-12000004000.jsonl.zst",
        "12000000000-12000001000.jsonl.zst",
        "12000002000-12000003000.jsonl.zst",
        "12000001000-12000002000.jsonl.zst",
    ]
    for name in names:  # created out of order
        (tmp_path / name).write_bytes(b"x")
    watcher = InputWatcher(tmp_path, SETTLE)
    assert watcher.scan(set()) == []
    time.sleep(SETTLE * 1.25)
    assert _names(watcher.scan(set())) == sorted(names)


def test_changed_since_tells_a_replaced_or_grown_file_from_the_registered_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(b"12345")
    [found] = InputWatcher(tmp_path, settle_seconds=0).scan(set())
    assert changed_since(path, found.size, found.mtime) is None
    path.write_bytes(b"123456")
    assert "changed since it was registered" in str(changed_since(path, found.size, found.mtime))
    path.write_bytes(b"12345")  # same size, another mtime: replaced
    os.utime(path, ns=(0, int(found.mtime.timestamp() * 1e9) + 10**9))
    assert changed_since(path, found.size, found.mtime) is not None
    path.unlink()
    assert "cannot stat" in str(changed_since(path, found.size, found.mtime))
