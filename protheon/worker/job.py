"""One job, start to finish: claim → fetch → decompress → transform → write."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Iterator

from protheon.broker import JobMessage
from protheon.pgcr.transform import batches
from protheon.worker.chunk_client import ChunkClient
from protheon.worker.writer import JobWriter, WriteResult
from protheon.zstdio import decompressed_blocks

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


def chunk_lines(data: bytes, expected: int) -> Iterator[bytes]:
    """Lines of a compressed chunk, streamed; raises ChunkMismatch if the count is off."""
    count = 0
    carry = b""
    for block in decompressed_blocks(io.BytesIO(data)):
        lines = block.split(b"\n")
        lines[0] = carry + lines[0]
        carry = lines.pop()
        count += len(lines)
        yield from lines
    if carry:
        count += 1
        yield carry
    if count != expected:
        raise ChunkMismatch(f"chunk holds {count} lines, its job says {expected}")


class JobRunner:
    def __init__(self, client: ChunkClient, writer: JobWriter) -> None:
        self.client = client
        self.writer = writer

    def run(self, job: JobMessage) -> JobOutcome:
        started = time.monotonic()
        blocked = self.writer.claim(job.job_id)
        if blocked == "done":
            return JobOutcome(job.job_id, None, "already done", time.monotonic() - started)
        if blocked is not None:
            return JobOutcome(job.job_id, None, f"job is {blocked}", time.monotonic() - started)
        try:
            data = self.client.fetch(job.job_id, job.byte_size)
            result = self.writer.write(
                job.job_id,
                job.file_id,
                lambda: batches(chunk_lines(data, job.line_count), job.first_line, job.job_id),
            )
        except Exception as exc:
            self.writer.record_error(job.job_id, f"{type(exc).__name__}: {exc}")
            raise
        return JobOutcome(job.job_id, result, "written", time.monotonic() - started)
