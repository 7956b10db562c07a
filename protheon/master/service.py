"""The master's main loop: watch → split → record → publish, and clean up after done jobs.

One thread owns the RabbitMQ connection (pika is not thread-safe) and does the splitting; the
gRPC server's threads serve chunk bytes and done signals. The two meet only in ``OpenChunks``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import pika
import pika.exceptions

from protheon import broker
from protheon.config import Settings
from protheon.master.chunk_server import ChunkService, OpenChunk, OpenChunks, start_server
from protheon.master.ledger import FileRecord, MasterLedger
from protheon.master.splitter import chunk_path, split_file
from protheon.master.watcher import InputFile, InputWatcher
from protheon.zstdio import CorruptInput

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0


class Master:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.chunks = OpenChunks()
        self.ledger = MasterLedger(settings.pg_dsn)
        self._rpc_ledger = MasterLedger(settings.pg_dsn, "protheon-master-rpc")
        self.watcher = InputWatcher(settings.input, settings.settle_seconds)
        self._last_sweep = 0.0
        self.port = 0
        self._connection: pika.BlockingConnection | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: stopping after the current chunk", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        self.settings.workspace.mkdir(parents=True, exist_ok=True)
        unpublished = self._recover_open_jobs()
        service = ChunkService(self.chunks, self._rpc_ledger, self.settings.rpc_piece_bytes)
        server, _health, self.port = start_server(self.settings.listen, service)
        log.info("serving chunks on %s (port %d)", self.settings.listen, self.port)
        try:
            self._connection = broker.connect(self.settings.amqp_url, "protheon-master")
            channel = self._connection.channel()
            channel.confirm_delivery()
            broker.declare_queues(channel, self.settings.queue, self.settings.delivery_limit)
            for message in unpublished:
                self._publish(channel, message)
            while not self.stopping.is_set():
                self._work_once(channel)
                self._connection.sleep(self.settings.scan_interval)
        finally:
            log.info("stopping: no more publishing; letting open chunk streams finish")
            server.stop(grace=5).wait()
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
            self.ledger.close()
            self._rpc_ledger.close()
        return 0

    # -- work --------------------------------------------------------------------------------

    def _work_once(self, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
        known = self.ledger.files_by_name()
        for record in known.values():
            if record.status == "splitting" and not self.stopping.is_set():
                self._split(channel, record)  # resume a split a previous run did not finish
        for found in self.watcher.scan(set(known)):
            if self.stopping.is_set():
                return
            self._split(channel, self._register(found))
        self._sweep(force=True)

    def _register(self, found: InputFile) -> FileRecord:
        log.info("new input file %s (%d bytes)", found.name, found.size)
        return self.ledger.register_file(found.name, found.size, found.mtime)

    def _split(
        self, channel: pika.adapters.blocking_connection.BlockingChannel, record: FileRecord
    ) -> None:
        source = self.settings.input / record.name
        lines, chunks = record.lines_split, record.chunks_split
        started = time.monotonic()
        try:
            for chunk in split_file(
                source, self.settings.workspace, record.file_id, self.settings.chunk_lines,
                self.settings.chunk_level, skip_lines=lines, first_seq=chunks,
            ):  # fmt: skip
                job_id = self.ledger.record_chunk(record.file_id, chunk)
                lines, chunks = chunk.first_line - 1 + chunk.line_count, chunk.seq + 1
                self.chunks.add(OpenChunk(job_id, chunk.path, chunk.byte_size))
                message = broker.JobMessage(
                    job_id, record.file_id, record.name, chunk.seq, chunk.first_line,
                    chunk.line_count, chunk.byte_size, chunk.raw_size,
                )  # fmt: skip
                self._publish(channel, message)
                if not self._wait_for_room():
                    return  # stopping: the file stays 'splitting' and resumes on the next start
        except (CorruptInput, OSError) as exc:
            log.error("%s: %s (%d lines before it still load)", record.name, exc, lines)
            self.ledger.fail_file(record.file_id, str(exc), lines, chunks)
            return
        self.ledger.finish_split(record.file_id, lines, chunks)
        log.info(
            "%s: split into %d chunks, %d lines, in %.1fs",
            record.name, chunks, lines, time.monotonic() - started,
        )  # fmt: skip

    def _publish(
        self, channel: pika.adapters.blocking_connection.BlockingChannel, message: broker.JobMessage
    ) -> None:
        broker.publish_job(channel, self.settings.queue, message)
        self.ledger.mark_published(message.job_id)

    def _wait_for_room(self) -> bool:
        """Hold the splitter while ``max_ready_chunks`` chunks wait: the workspace stays bounded."""
        assert self._connection is not None
        while len(self.chunks) >= self.settings.max_ready_chunks:
            if self.stopping.is_set():
                return False
            self._connection.process_data_events(time_limit=0.2)
            self._sweep()
        return not self.stopping.is_set()

    def _sweep(self, force: bool = False) -> None:
        """Delete chunks of jobs done without a done signal reaching us; close finished files."""
        now = time.monotonic()
        if not force and now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for job_id in self.ledger.done_among(self.chunks.job_ids()):
            self.chunks.release(job_id)
        for name in self.ledger.close_finished_files():
            log.info("%s: all jobs done", name)

    def _recover_open_jobs(self) -> list[broker.JobMessage]:
        """Re-open the chunks of jobs not done; return the jobs never confirmed as published."""
        unpublished = []
        for record in self.ledger.open_jobs():
            job = record.message
            path = chunk_path(self.settings.workspace, job.file_id, job.seq)
            if not path.exists():
                log.error("job %d: chunk %s is missing from the workspace", job.job_id, path)
                continue
            self.chunks.add(OpenChunk(job.job_id, path, path.stat().st_size))
            if record.status == "ready":
                unpublished.append(job)
        return unpublished
