"""Find input files that are complete.

There is no portable "file closed" event across NFS, SMB and local disks, so a file counts as
complete once its size and mtime have stayed the same for ``settle_seconds`` (a file whose
mtime is already that old when first seen counts at once). Names starting
with a dot or ending in ``.part``/``.tmp`` are never read: writers that copy under a temporary
name and rename (rsync, ``protheon gen``) are then picked up the moment they rename.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".zst"
_TEMPORARY_SUFFIXES = (".part", ".tmp", ".partial")


@dataclasses.dataclass(frozen=True)
class InputFile:
    name: str  # relative to the input folder
    path: Path
    size: int
    mtime: datetime
    first_seen: float  # time.monotonic() when the watcher first saw it


@dataclasses.dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


class InputWatcher:
    def __init__(self, folder: Path, settle_seconds: float) -> None:
        self.folder = folder
        self.settle_seconds = settle_seconds
        self._seen: dict[str, _Seen] = {}
        self._first_seen: dict[str, float] = {}
        self._not_files: set[str] = set()  # said once: a directory named like an input

    def scan(self, known: set[str]) -> list[InputFile]:
        """Complete files not in ``known``, oldest name first (names sort by instance-id range)."""
        now = time.monotonic()
        ready: list[InputFile] = []
        present: set[str] = set()
        try:
            entries = sorted(os.scandir(self.folder), key=lambda entry: entry.name)
        except FileNotFoundError:
            log.warning("input folder %s does not exist (yet)", self.folder)
            return []
        for entry in entries:
            name = entry.name
            if name in known or not _is_candidate(name):
                continue
            try:
                if not entry.is_file():
                    if name not in self._not_files:
                        log.warning("%s is not a regular file; it is not loaded", name)
                        self._not_files.add(name)
                    continue
                stat = entry.stat()
            except OSError as exc:
                log.warning("%s: cannot stat (%s); trying again", name, exc.strerror)
                continue
            present.add(name)
            self._first_seen.setdefault(name, now)
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                # Unchanged for settle_seconds already (renamed in after being written, as
                # rsync and `protheon gen` do): ready at first sight, no waiting.
                age = time.time() - stat.st_mtime_ns / 1e9
                since = now - age if seen is None and age > 0 else now
                self._seen[name] = _Seen(stat.st_size, stat.st_mtime_ns, since)
                seen = self._seen[name]
            if now - seen.since >= self.settle_seconds:
                mtime = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)
                first_seen = self._first_seen.get(name, seen.since)
                ready.append(InputFile(name, Path(entry.path), stat.st_size, mtime, first_seen))
        for name in set(self._seen) - present:
            del self._seen[name]
        for name in set(self._first_seen) - present:
            del self._first_seen[name]
        return ready


def _is_candidate(name: str) -> bool:
    return (
        name.endswith(SUFFIX)
        and not name.startswith(".")
        and not name.endswith(_TEMPORARY_SUFFIXES)
    )


@dataclasses.dataclass(frozen=True)
class SourceIdentity:
    """A source file as the ledger registered it: a file that no longer matches was replaced
    or appended to, and reading on would silently mix two versions."""

    size: int
    mtime: datetime

    def differs(self, stat: os.stat_result) -> str | None:
        """Why the file with this ``stat`` is not the registered one, or None."""
        now = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)
        if stat.st_size != self.size or abs((now - self.mtime).total_seconds()) > 0.001:
            return (
                f"the file changed since it was registered ({self.size} bytes, mtime"
                f" {self.mtime:%F %T}): now {stat.st_size} bytes, mtime {now:%F %T}"
            )
        return None


def changed_since(path: Path, size: int, mtime: datetime) -> str | None:
    """Why ``path`` is no longer the file registered with ``size`` and ``mtime``, or None
    (a resumed split must cut the very file whose first chunks are already loaded)."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    return SourceIdentity(size, mtime).differs(stat)
