"""Streaming zstd reading that notices damage.

python-zstandard's ``stream_reader`` silently stops at a truncated file, so a half-copied
input would look complete. Feeding a ``decompressobj`` per frame lets us see that the last frame
never ended, and handles multi-frame files (pzstd, ``protheon gen --multi-frame``) naturally.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import zstandard

READ_SIZE = 1 << 20


class InputError(ValueError):
    """A source file cannot be read to the end; the chunks cut before the error stay valid."""


class CorruptInput(InputError):
    """The compressed stream is damaged or cut short; the message says where."""


class UnreadableInput(InputError):
    """The operating system refused to read the file (permissions, I/O error, vanished)."""


MAX_PASSTHROUGH_FRAME = 64 << 20


def small_frames(path_header: bytes) -> bool:
    """Whether a file's first frame declares a small content size: pzstd and
    ``protheon gen --multi-frame`` write many such frames, which can be served as they are."""
    try:
        size = zstandard.get_frame_parameters(path_header).content_size
    except zstandard.ZstdError:
        return False
    return 0 < size <= MAX_PASSTHROUGH_FRAME


def frames(source: BinaryIO, read_size: int = READ_SIZE) -> Iterator[tuple[int, int, bytes]]:
    """(compressed offset, compressed length, decompressed bytes) of each frame in turn."""
    decompressor = zstandard.ZstdDecompressor()
    frame = decompressor.decompressobj()
    parts: list[bytes] = []
    start = consumed = 0
    started = False
    pending = b""
    while True:
        try:
            piece = pending or source.read(read_size)
        except OSError as exc:
            raise UnreadableInput(f"cannot read: {exc}") from None
        pending = b""
        if not piece:
            break
        started = True
        try:
            out = frame.decompress(piece)
        except zstandard.ZstdError as exc:
            raise CorruptInput(f"corrupt zstd frame at compressed byte {start}: {exc}") from None
        if out:
            parts.append(out)
        if frame.eof:
            pending = frame.unused_data
            consumed += len(piece) - len(pending)
            yield start, consumed - start, b"".join(parts)
            start, parts, started = consumed, [], False
            frame = decompressor.decompressobj()
        else:
            consumed += len(piece)
    if started:
        raise CorruptInput(f"truncated zstd data: the last frame is cut at byte {consumed}")


def decompressed_blocks(source: BinaryIO, read_size: int = READ_SIZE) -> Iterator[bytes]:
    """Yield decompressed bytes of every frame in ``source``; raise CorruptInput on damage."""
    decompressor = zstandard.ZstdDecompressor()
    frame = decompressor.decompressobj()
    frame_started = False
    consumed = 0
    pending = b""
    while True:
        try:
            piece = pending or source.read(read_size)
        except OSError as exc:
            raise UnreadableInput(f"cannot read: {exc}") from None
        pending = b""
        if not piece:
            break
        if not frame_started:
            frame_started = True
        try:
            out = frame.decompress(piece)
        except zstandard.ZstdError as exc:
            raise CorruptInput(
                f"corrupt zstd data near compressed byte {consumed}: {exc}"
            ) from None
        if frame.eof:
            pending = frame.unused_data
            consumed += len(piece) - len(pending)
            frame = decompressor.decompressobj()
            frame_started = False
        else:
            consumed += len(piece)
        if out:
            yield out
    if frame_started:
        raise CorruptInput(f"truncated zstd data: the last frame is cut at byte {consumed}")
