"""Cut a compressed JSON-lines file into chunks of about N lines, one chunk at a time.

A source made of small frames (pzstd, ``protheon gen --multi-frame``) is not recompressed: a
chunk is a byte range of its whole frames, served from the source itself. Otherwise:

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

from protheon.zstdio import (
    CorruptInput,
    UnreadableInput,
    decompressed_blocks,
    frames,
    small_frames,
)


@dataclasses.dataclass(frozen=True)
class Chunk:
    seq: int
    first_line: int  # 1-based line number of the chunk's first line in the source file
    line_count: int
    path: Path  # the chunk file, or the source itself for a passed-through byte range
    byte_size: int  # compressed
    raw_size: int
    # Passed through (whole frames of a multi-frame source, served as they are): where the
    # frames start in the source; decompressed bytes at their start that belong to the
    # previous chunk's last line; the decompressed end of this chunk's last line, from the
    # frames after the range.
    source_offset: int | None = None
    head_skip: int = 0
    tail: bytes = b""


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
    """Chunks of ``source``: byte ranges of whole frames when the source is made of small
    frames (no recompression: the master only decompresses to count lines), else recompressed
    chunk files. Raises protheon.zstdio.InputError when the file is damaged or unreadable."""
    with _open_source(source) as fh:
        try:
            header = fh.read(18)
        except OSError as exc:
            raise UnreadableInput(f"cannot read: {exc}") from None
    if small_frames(header):
        return pass_through(source, chunk_lines, skip_lines, first_seq, on_block)
    return recompress(source, workspace, file_id, chunk_lines, level, skip_lines, first_seq,
                      on_block)  # fmt: skip


def _open_source(source: Path) -> BinaryIO:
    try:
        return source.open("rb")
    except OSError as exc:
        raise UnreadableInput(f"cannot open: {exc}") from None


@dataclasses.dataclass
class _Range:
    offset: int
    head_skip: int
    end: int = 0
    lines: int = 0
    raw: int = 0
    partial: bool = False  # its last line continues in later frames


def pass_through(
    source: Path,
    chunk_lines: int,
    skip_lines: int = 0,
    first_seq: int = 0,
    on_block: Callable[[], None] = lambda: None,
) -> Iterator[Chunk]:
    """Chunks that are byte ranges of whole frames (pzstd-style sources may end frames
    mid-line: a line belongs to the chunk it starts in, completed by ``tail``). A resumed
    split recomputes the same boundaries from the start and skips chunks before ``first_seq``.
    """
    seq, line_no = 0, 1
    current: _Range | None = None
    waiting: _Range | None = None  # closed, but its last line is still incomplete
    tail: list[bytes] = []

    def close(span: _Range, tail_bytes: bytes) -> Chunk | None:
        nonlocal seq, line_no
        lines = span.lines + (1 if span.partial else 0)
        size, raw = span.end - span.offset, span.raw + len(tail_bytes)
        chunk = Chunk(seq, line_no, lines, source, size, raw, span.offset, span.head_skip,
                      tail_bytes)  # fmt: skip
        seq, line_no = seq + 1, line_no + lines
        if chunk.seq < first_seq:
            return None
        if chunk.seq == first_seq and chunk.first_line != skip_lines + 1:
            raise CorruptInput(f"the file changed: chunk {first_seq} no longer starts at"
                               f" line {skip_lines + 1}")  # fmt: skip
        return chunk

    fh = _open_source(source)
    with fh:
        data = b""
        for offset, length, data in frames(fh):
            on_block()
            start = 0
            if waiting is not None:
                newline = data.find(b"\n")
                if newline < 0:  # the straddling line spans this whole frame too
                    tail.append(data)
                    continue
                tail.append(data[: newline + 1])
                start = newline + 1
                if (chunk := close(waiting, b"".join(tail))) is not None:
                    yield chunk
                waiting, tail = None, []
                if start == len(data):
                    continue
            if current is None:
                current = _Range(offset, start)
            current.end = offset + length
            current.lines += data.count(b"\n", start)
            current.raw += len(data) - start
            if current.lines >= chunk_lines:
                current.partial = not data.endswith(b"\n")
                if current.partial:
                    waiting = current
                elif (chunk := close(current, b"")) is not None:
                    yield chunk
                current = None
        # The file may end inside the straddling line.
        if waiting is not None and (chunk := close(waiting, b"".join(tail))) is not None:
            yield chunk
        if current is not None and current.raw:
            current.partial = not data.endswith(b"\n")
            if (chunk := close(current, b"")) is not None:
                yield chunk


def recompress(
    source: Path,
    workspace: Path,
    file_id: int,
    chunk_lines: int,
    level: int = 3,
    skip_lines: int = 0,
    first_seq: int = 0,
    on_block: Callable[[], None] = lambda: None,
) -> Iterator[Chunk]:
    """Recompressed chunk files of ``source``, starting after ``skip_lines`` lines (to resume).

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

    fh = _open_source(source)
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
