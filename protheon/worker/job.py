"""One job, start to finish: claim → fetch → decompress → transform → write."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Callable, Iterator

import psycopg

from protheon.backoff import Backoff
from protheon.broker import JobMessage
from protheon.pgcr.transform import LostLines, batches
from protheon.worker.chunk_client import ChunkClient, ChunkUnavailable
from protheon.worker.metrics import CHUNK_RECEIVED_BYTES
from protheon.worker.writer import JobWriter, WriteResult
from protheon.zstdio import CorruptInput, decompressed_blocks, frame_extents, frame_pieces

log = logging.getLogger(__name__)


class ChunkMismatch(ValueError):
    """The chunk does not hold the lines its job message promises."""


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    job_id: int
    result: WriteResult | None  # None: nothing to do (already done, or unknown to the ledger)
    note: str
    seconds: float

    @property
    def done(self) -> bool:
        """The job is committed (now or before): ack it and tell the master."""
        return self.result is not None or self.note == "already done"


def _frames(data: bytes) -> Iterator[bytes | LostLines]:
    """A passed-through chunk's frames, decompressed one by one: a corrupt frame is reported
    and skipped, the frames after it still count (each frame stands alone)."""
    view = memoryview(data)
    for extent in frame_extents(io.BytesIO(data)):  # a broken frame header fails the chunk
        try:
            yield from frame_pieces(view[extent.offset : extent.offset + extent.length])
        except CorruptInput as exc:
            size = f"{extent.content_size:,} bytes" if extent.content_size >= 0 else "its bytes"
            yield LostLines(
                f"{exc} (the frame at chunk byte {extent.offset:,}): {size} of lines lost;"
                " line numbers after it in this file are approximate"
            )


def _text(data: bytes, head_skip: int, tail: bytes, whole_frames: bool
          ) -> Iterator[bytes | LostLines]:  # fmt: skip
    """The chunk's decompressed bytes, without the head that belongs to the chunk before and
    with the tail that completes its last line."""
    blocks = _frames(data) if whole_frames else decompressed_blocks(io.BytesIO(data))
    for block in blocks:
        if isinstance(block, LostLines):
            head_skip = 0  # where the next chunk's head began is lost with the frame
            yield block
            continue
        if head_skip:
            dropped = min(head_skip, len(block))
            block, head_skip = block[dropped:], head_skip - dropped
        if block:
            yield block
    if tail:
        yield tail


def chunk_lines(
    data: bytes, expected: int | None, head_skip: int = 0, tail: bytes = b""
) -> Iterator[bytes | LostLines]:
    """Lines of a compressed chunk, streamed; raises ChunkMismatch if the count is off.

    A passed-through chunk (``expected`` None: its count is not known beforehand) is read
    frame by frame, and a corrupt frame becomes one LostLines in place of its lines, so the
    other frames still load; a recompressed chunk is the master's own file and must be whole.
    """
    count = 0
    carry = b""
    for block in _text(data, head_skip, tail, whole_frames=expected is None):
        if isinstance(block, LostLines):
            if carry:  # a line cut by the lost frame: kept, it becomes a reject
                yield carry
                carry = b""
            yield block
            continue
        lines = block.split(b"\n")
        lines[0] = carry + lines[0]
        carry = lines.pop()
        count += len(lines)
        yield from lines
    if carry:
        count += 1
        yield carry
    if expected is not None and count != expected:
        raise ChunkMismatch(f"chunk holds {count} lines, its job says {expected}")


def is_transient(error: BaseException) -> bool:
    """Errors of a dependency that comes back by itself (restart, failover, network blip)."""
    if isinstance(error, ChunkUnavailable):
        return error.transient
    return isinstance(error, psycopg.OperationalError)


class JobRunner:
    """Runs jobs; waits out a master or database outage instead of failing the delivery.

    A failed delivery counts towards the queue's delivery limit, after which the job is
    dead-lettered, so only errors that would recur (a chunk that is gone, a job unknown to the
    ledger) should fail one. Transient errors are retried here, with backoff, for as long as
    the outage lasts, or until ``should_stop()`` says the worker is draining.
    """

    def __init__(
        self,
        client: ChunkClient,
        writer: JobWriter,
        should_stop: Callable[[], bool] = lambda: False,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.writer = writer
        self.should_stop = should_stop
        self.on_progress = on_progress

    def run(self, job: JobMessage, final: bool = False) -> JobOutcome:
        """``final``: the queue's last allowed delivery; a failure then marks the job failed."""
        started = time.monotonic()
        backoff = Backoff(first=0.5, cap=10.0)  # one job's outage: a fresh schedule
        first = True
        while True:
            try:
                return self._attempt(job, started, count_attempt=first)
            except Exception as exc:
                if not is_transient(exc) or self.should_stop():
                    self._record_error(job.job_id, exc, final and not is_transient(exc))
                    raise
                delay = backoff.next()
                log.warning("job %d: %s; retrying in %.1fs", job.job_id, exc, delay)
                first = False
                self._wait(delay)

    def _attempt(self, job: JobMessage, started: float, count_attempt: bool) -> JobOutcome:
        blocked = self.writer.claim(job.job_id, count_attempt)
        if blocked == "done":
            return JobOutcome(job.job_id, None, "already done", time.monotonic() - started)
        if blocked is not None:
            return JobOutcome(job.job_id, None, f"job is {blocked}", time.monotonic() - started)
        data, tail = self.client.fetch(job.job_id, job.byte_size, self.on_progress)
        CHUNK_RECEIVED_BYTES.inc(len(data))
        result = self.writer.write(
            job.job_id,
            job.file_id,
            lambda: batches(chunk_lines(data, job.line_count, job.head_skip, tail), job.job_id),
            self.on_progress,
            first_line=job.first_line,
        )
        return JobOutcome(job.job_id, result, "written", time.monotonic() - started)

    def _wait(self, seconds: float) -> None:
        """Sleep while still beating: waiting out an outage is not a hang."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self.should_stop():
            self.on_progress()
            time.sleep(max(0.0, min(0.5, until - time.monotonic())))

    def _record_error(self, job_id: int, error: BaseException, failed: bool) -> None:
        text = f"{type(error).__name__}: {error}"
        if failed:
            self.writer.mark_failed(job_id, text)
        else:
            self.writer.record_error(job_id, text)
