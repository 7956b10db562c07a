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

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from protheon.zstdio import (
    MAX_PASSTHROUGH_FRAME,
    CorruptInput,
    FrameExtent,
    TruncatedInput,
    UnreadableInput,
    decompress_frame,
    decompressed_blocks,
    frame_extents,
    small_frames,
)


@dataclasses.dataclass(frozen=True)
class Chunk:
    seq: int
    # 1-based line number of the chunk's first line in the source file, and its lines; None
    # for a passed-through chunk (cut without counting): the worker counts them.
    first_line: int | None
    line_count: int | None
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

    @property
    def lines_after(self) -> int | None:
        """Lines of the file up to the end of this chunk, when known."""
        if self.first_line is None or self.line_count is None:
            return None
        return self.first_line - 1 + self.line_count


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
    frames (no recompression, and hardly any decompression), else recompressed chunk files.
    Raises protheon.zstdio.InputError when the file is damaged or unreadable."""
    with _open_source(source) as fh:
        try:
            header = fh.read(18)
        except OSError as exc:
            raise UnreadableInput(f"cannot read: {exc}") from None
    if small_frames(header):
        return pass_through(source, chunk_lines, first_seq, on_block)
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
    raw: int = 0


# Decompressed bytes read at the start of a passed-through file to learn its line length.
CALIBRATION_BYTES = 4 << 20


def pass_through(
    source: Path,
    chunk_lines: int,
    first_seq: int = 0,
    on_block: Callable[[], None] = lambda: None,
) -> Iterator[Chunk]:
    """Chunks that are byte ranges of whole frames, cut from frame headers alone.

    The master decompresses only the first few MiB (to learn how many bytes make
    ``chunk_lines`` lines) and the frames at each cut (to find where a line crossing it
    ends): a line belongs to the chunk it starts in, completed by ``tail``; the next chunk
    skips ``head_skip`` bytes. Line counts come from the workers, so chunks carry none. A
    resumed split recomputes the same cuts and skips chunks before ``first_seq``.
    """
    with _open_source(source) as fh, _open_source(source) as reader:
        target = _raw_bytes_per_chunk(reader, chunk_lines)

        def content(extent: FrameExtent) -> bytes | None:
            """The frame's text, or None for a corrupt frame: the worker whose chunk holds it
            reports it as a reject, and the cut is made right after it."""
            reader.seek(extent.offset)
            try:
                return decompress_frame(_read_exactly(reader, extent.length), extent.offset)
            except TruncatedInput:
                raise
            except CorruptInput:
                return None

        seq = 0
        current: _Range | None = None
        waiting: _Range | None = None  # cut, but its last line continues in later frames
        tail: list[bytes] = []

        def close(span: _Range, tail_bytes: bytes) -> Chunk | None:
            nonlocal seq
            chunk = Chunk(
                seq, 1 if seq == 0 else None, None, source, span.end - span.offset,
                span.raw + len(tail_bytes), span.offset, span.head_skip, tail_bytes,
            )  # fmt: skip
            seq += 1
            return chunk if chunk.seq >= first_seq else None

        cut_short: TruncatedInput | None = None
        extents = frame_extents(fh)
        while True:
            try:
                extent = next(extents)
            except StopIteration:
                break
            except TruncatedInput as exc:  # a copy cut short: keep the whole frames before
                cut_short = exc
                break
            on_block()
            if not 0 <= extent.content_size <= MAX_PASSTHROUGH_FRAME:
                raise CorruptInput(
                    f"the frame at compressed byte {extent.offset:,} does not state a small"
                    " content size: not a pzstd-style file past this point (recompress it"
                    " whole, e.g. with pzstd)"
                )
            data: bytes | None = None
            size = extent.content_size
            start = 0
            if waiting is not None:
                data = content(extent)
                if data is None:  # the line crossing the cut runs into a corrupt frame
                    if (chunk := close(waiting, b"".join(tail))) is not None:
                        yield chunk
                    waiting, tail = None, []
                    current = _Range(extent.offset, 0, extent.offset + extent.length, size)
                    continue
                newline = data.find(b"\n")
                if newline < 0:  # the line crossing the cut spans this whole frame too
                    tail.append(data)
                    continue
                tail.append(data[: newline + 1])
                start = newline + 1
                if (chunk := close(waiting, b"".join(tail))) is not None:
                    yield chunk
                waiting, tail = None, []
                if start == size:
                    continue
            if current is None:
                current = _Range(extent.offset, start)
            current.end = extent.offset + extent.length
            current.raw += size - start
            if current.raw + size // 2 >= target:  # the nearest frame boundary to the target
                data = data if data is not None else content(extent)
                if data is None or data.endswith(b"\n"):  # corrupt: cut right after it
                    if (chunk := close(current, b"")) is not None:
                        yield chunk
                else:
                    waiting = current
                current = None
        # The file may end inside the line crossing the last cut, or without a final newline.
        if waiting is not None and (chunk := close(waiting, b"".join(tail))) is not None:
            yield chunk
        if current is not None and current.raw and (chunk := close(current, b"")) is not None:
            yield chunk
        if cut_short is not None:
            raise cut_short


def _raw_bytes_per_chunk(reader: BinaryIO, chunk_lines: int) -> int:
    """Decompressed bytes that hold about ``chunk_lines`` lines, from the file's first MiBs
    (the same for every run over the same file, so a resumed split cuts the same chunks)."""
    raw = lines = 0
    # Damage is not the calibration's business: the frame walk reports a cut, the worker of
    # the chunk holding a corrupt frame reports that frame.
    with contextlib.suppress(CorruptInput):
        for block in decompressed_blocks(reader):
            raw += len(block)
            lines += block.count(b"\n")
            if raw >= CALIBRATION_BYTES:
                break
    return max(1, chunk_lines * raw // max(lines, 1))


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
    try:
        data = reader.read(size)
    except OSError as exc:
        raise UnreadableInput(f"cannot read: {exc}") from None
    if len(data) != size:
        raise CorruptInput("the file shrank while it was being split")
    return data


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
    carry: list[bytes] = []  # the start of a line whose newline has not come yet

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

    def write_lines(block: bytes, start: int, end: int, count: int) -> None:
        """Write the carried start of a line and ``count`` whole lines of block[start:end]."""
        nonlocal writer, lines_in_chunk
        if writer is None:
            writer = _ChunkWriter(chunk_path(workspace, file_id, seq), level)
        for part in carry:
            writer.write(part)
        carry.clear()
        writer.write(block[start:end])
        lines_in_chunk += count

    fh = _open_source(source)
    try:
        with fh:
            try:
                for block in decompressed_blocks(fh):
                    on_block()  # progress, also while skipping to where a resume left off
                    start = 0
                    if to_skip:
                        start = _after_newlines(block, 0, to_skip)
                        if start < 0:
                            to_skip -= block.count(b"\n")
                            continue
                        to_skip = 0
                    while start < len(block):
                        end = _after_newlines(block, start, chunk_lines - lines_in_chunk)
                        if end >= 0:
                            write_lines(block, start, end, chunk_lines - lines_in_chunk)
                            start = end
                            yield finish()
                            continue
                        last = block.rfind(b"\n", start) + 1  # after the block's last newline
                        if last > start:
                            write_lines(block, start, last, block.count(b"\n", start, last))
                            start = last
                        carry.append(block[start:])
                        break
            except TruncatedInput:
                # A copy cut short: the whole lines before the cut are intact; keep them.
                if lines_in_chunk:
                    yield finish()
                raise
        if carry and any(carry):  # the last line had no newline: it is still a line
            write_lines(b"\n", 0, 1, 1)
        if writer is not None:
            yield finish()
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
