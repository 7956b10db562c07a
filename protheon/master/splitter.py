"""Cut a compressed JSON-lines file into chunk files of N lines, one chunk at a time.

A generator: the caller records and publishes each chunk before the next one is cut, so the
first job of a 10 GB file is on the queue within a second or two, and memory stays bounded by
one read block. Each chunk is recompressed (level 1-3 runs at hundreds of MB/s) into
``<workspace>/chunks/<file_id>-<seq>.zst``, written under a temporary name and renamed when
complete, so a chunk file that exists is always whole.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from protheon.zstdio import UnreadableInput, decompressed_blocks


@dataclasses.dataclass(frozen=True)
class Chunk:
    seq: int
    first_line: int  # 1-based line number of the chunk's first line in the source file
    line_count: int
    path: Path
    byte_size: int  # compressed
    raw_size: int


def chunk_path(workspace: Path, file_id: int, seq: int) -> Path:
    return workspace / "chunks" / f"{file_id}-{seq}.zst"


class _ChunkWriter:
    def __init__(self, path: Path, level: int) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}.part")
        self._fh: BinaryIO = self.temp.open("wb")
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._writer = compressor.stream_writer(self._fh, closefd=False)
        self.raw_size = 0

    def write(self, data: bytes) -> None:
        if data:
            self._writer.write(data)
            self.raw_size += len(data)

    def finish(self) -> int:
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()  # type: ignore[no-untyped-call]
        size = self._fh.tell()
        # On disk before the ledger points at it: after a power cut, a recorded chunk is whole.
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.temp, self.path)
        _fsync_directory(self.path.parent)
        return size

    def abandon(self) -> None:
        self._fh.close()
        self.temp.unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def split_file(
    source: Path,
    workspace: Path,
    file_id: int,
    chunk_lines: int,
    level: int = 3,
    skip_lines: int = 0,
    first_seq: int = 0,
    on_block: Callable[[], None] = lambda: None,
) -> Iterator[Chunk]:
    """Yield chunks of ``source`` in order, starting after ``skip_lines`` lines (to resume).

    Raises protheon.zstdio.InputError when the file is damaged or cannot be read; an OSError
    of the workspace (a full disk) propagates as is: it is not the file's fault.

    Chunks already yielded hold whole lines read before the damage was noticed. zstd notices
    some damage (a flipped byte in a stored block) only at the frame's checksum, at the frame's
    end: lines before that may be altered. Holding chunks back until their frame is verified
    would hold a single-frame file's every job until EOF, so it is not done; the file is marked
    failed with the error, and the worker's validation turns garbled lines into rejects.
    """
    (workspace / "chunks").mkdir(parents=True, exist_ok=True)
    seq = first_seq
    line_no = skip_lines + 1  # number of the next line to emit
    to_skip = skip_lines
    writer: _ChunkWriter | None = None
    lines_in_chunk = 0
    ends_with_newline = True

    def finish() -> Chunk:
        nonlocal writer, seq, line_no, lines_in_chunk
        assert writer is not None
        size = writer.finish()
        chunk = Chunk(seq, line_no, lines_in_chunk, writer.path, size, writer.raw_size)
        seq += 1
        line_no += lines_in_chunk
        lines_in_chunk = 0
        writer = None
        return chunk

    try:
        fh = source.open("rb")
    except OSError as exc:
        raise UnreadableInput(f"cannot open: {exc}") from None
    try:
        with fh:
            for block in decompressed_blocks(fh):
                on_block()  # progress, also while skipping to where a resumed split left off
                ends_with_newline = block.endswith(b"\n")
                start = 0
                if to_skip:
                    start = _after_newlines(block, 0, to_skip)
                    if start < 0:
                        to_skip -= block.count(b"\n")
                        continue
                    to_skip = 0
                while start < len(block):
                    if writer is None:
                        writer = _ChunkWriter(chunk_path(workspace, file_id, seq), level)
                    wanted = chunk_lines - lines_in_chunk
                    available = block.count(b"\n", start)
                    if available < wanted:
                        writer.write(block[start:])
                        lines_in_chunk += available
                        break
                    end = _after_newlines(block, start, wanted)
                    writer.write(block[start:end])
                    lines_in_chunk += wanted
                    start = end
                    yield finish()
        if writer is not None:
            if not ends_with_newline:
                writer.write(b"\n")  # the last line had no newline: it is still a line
                lines_in_chunk += 1
            if lines_in_chunk:
                yield finish()
            else:
                writer.abandon()
                writer = None
    finally:
        if writer is not None:
            writer.abandon()


def _after_newlines(block: bytes, start: int, count: int) -> int:
    """Index just past the ``count``-th newline at or after ``start``, or -1 if there are fewer."""
    position = start
    for _ in range(count):
        found = block.find(b"\n", position)
        if found < 0:
            return -1
        position = found + 1
    return position
