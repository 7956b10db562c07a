"""The master's main loop: watch → split → record → publish, and clean up after done jobs.

One thread owns the RabbitMQ connection (pika is not thread-safe) and does the splitting; the
gRPC server's threads serve chunk bytes and done signals. The two meet only in ``OpenChunks``.

RabbitMQ or PostgreSQL going away is waited out: the loop reconnects with backoff and carries
on from the ledger, which records every step before the next one (chunk written → job
``ready`` → published → ``published``). Jobs left ``ready`` by a broken connection or a crash
are published again on reconnect: the window between a publisher confirm and its ledger update
is one UPDATE, and a job published twice is harmless, since workers write a job only once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import grpc
import pika
import pika.exceptions
import psycopg
from grpc_health.v1.health import HealthServicer
from pika.adapters.blocking_connection import BlockingChannel

from protheon import broker, dead_letters, metrics, rpc_auth, status
from protheon.backoff import Backoff
from protheon.config import Settings
from protheon.master import metrics as master_metrics
from protheon.master.chunk_server import ChunkService, OpenChunk, OpenChunks, start_server
from protheon.master.ledger import FileRecord, MasterLedger
from protheon.master.splitter import chunk_path, split_file
from protheon.master.watcher import InputFile, InputWatcher, SourceIdentity, changed_since
from protheon.sdnotify import Notifier, Progress, Watchdog
from protheon.zstdio import CorruptInput, InputError

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 2.0
QUEUE_CHECK_INTERVAL = 10.0
LEDGER_EXPORT_INTERVAL = 5.0
MAX_BACKOFF = 10.0
# Waited out with backoff. OSError covers the workspace too (a full disk): retry, not exit.
_OUTAGES = (pika.exceptions.AMQPError, psycopg.OperationalError, OSError)


class Master:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.progress = Progress()
        self.stopping = threading.Event()
        self.chunks = OpenChunks()
        self.ledger = MasterLedger(settings.pg_dsn)
        self._rpc_ledger = MasterLedger(settings.pg_dsn, "protheon-master-rpc")
        self.watcher = InputWatcher(settings.input, settings.settle_seconds)
        self.port = 0
        self._backoff = Backoff(cap=MAX_BACKOFF)
        self.published = 0
        self.splitting = ""
        self._last_sweep = 0.0
        self._last_dead_letter_check = 0.0
        self._last_ledger_export = 0.0
        self._known: set[str] = set()
        self._failed_jobs = 0  # their chunks stay (for a retry) but do not take up room
        self._connection: pika.BlockingConnection | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("%s: draining: no more publishing", signal.Signals(signum).name)
            self.notifier.stopping("draining: letting open chunk streams finish")
            metrics.DRAINING.set(1)
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        self.settings.workspace.mkdir(parents=True, exist_ok=True)
        watchdog = Watchdog.start_for(self.notifier, self.progress)
        metrics.serve(self.settings.metrics_host, self.settings.master_metrics_port, "master")
        metrics.track_lifecycle(self.progress, watchdog)
        master_metrics.CHUNKS_OPEN.set_function(lambda: len(self.chunks))
        self._until_connected(self._recover_open_jobs)
        self._remove_orphan_chunks()
        service = ChunkService(self.chunks, self._rpc_ledger, self.settings.rpc_piece_bytes)
        security = rpc_auth.load(self.settings, master=True)
        server, health, self.port = start_server(self.settings.listen, service, security)
        log.info("serving chunks on %s (port %d)", self.settings.listen, self.port)
        try:
            while not self.stopping.is_set():
                try:
                    self._connect_and_work()
                except _OUTAGES as exc:
                    delay = self._backoff.next()
                    log.warning("lost a dependency (%s); retrying in %.0fs", exc, delay)
                    self.notifier.status(f"waiting for RabbitMQ/PostgreSQL: {exc}")
                    self._sleep(delay)
        finally:
            self.before_master_shutdown(server, health)
            if watchdog is not None:
                watchdog.stop()
        return 0

    def before_master_shutdown(self, server: grpc.Server, health: HealthServicer) -> None:
        """Stop taking streams, let open ones finish within the drain deadline, close up."""
        health.enter_graceful_shutdown()
        stopped = server.stop(grace=self.settings.drain_seconds)
        deadline = time.monotonic() + self.settings.drain_seconds
        while not stopped.wait(1.0):
            self.progress.beat()
            self.notifier.extend_timeout(max(deadline - time.monotonic(), 0) + 5)
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()
        self.ledger.close()
        self._rpc_ledger.close()
        log.info("stopped; %d jobs published this run", self.published)
        self.notifier.close()

    def _sleep(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self.stopping.is_set():
            self.progress.beat()  # waiting for a dependency on purpose: alive
            self.stopping.wait(0.2)

    def _until_connected(self, step: Callable[[], None]) -> None:
        backoff = Backoff(cap=MAX_BACKOFF)
        while True:
            try:
                step()
                return
            except _OUTAGES as exc:
                delay = backoff.next()
                log.warning("PostgreSQL unavailable (%s); retrying in %.0fs", exc, delay)
                self._sleep(delay)

    # -- work --------------------------------------------------------------------------------

    def _connect_and_work(self) -> None:
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()  # after a PostgreSQL outage: start clean
        # A chunk recorded just as the ledger connection broke is registered here.
        self._recover_open_jobs()
        self._connection = broker.connect(self.settings.amqp_url, "protheon-master")
        channel = self._connection.channel()
        channel.confirm_delivery()
        broker.declare_queues(channel, self.settings.queue, self.settings.delivery_limit)
        for record in self.ledger.open_jobs():
            if record.status == "ready" and self.chunks.get(record.message.job_id):
                self._publish(channel, record.message)
        self.notifier.ready(self._status_text())
        self._resume_splits(channel)
        while not self.stopping.is_set():
            self._work_once(channel)
            # A whole round worked: the next outage starts from short waits again (a fault
            # that recurs right after connecting, a full disk say, keeps backing off).
            self._backoff.reset()
            self._check_queues(channel)
            self._export_ledger()
            self.progress.beat()
            self.notifier.status(self._status_text())
            self._connection.sleep(self.settings.scan_interval)

    def _status_text(self) -> str:
        doing = f"splitting {self.splitting}" if self.splitting else "watching"
        return f"{doing} | {len(self.chunks)} chunks open | {self.published} jobs published"

    def _resume_splits(self, channel: BlockingChannel) -> None:
        """After (re)connecting: learn the known files, finish splits left half done."""
        known = self.ledger.files_by_name()
        self._known = set(known)
        for record in known.values():
            if record.status == "splitting" and not self.stopping.is_set():
                self._split(channel, record)

    def _work_once(self, channel: BlockingChannel) -> None:
        """One scan. The master is the only one to register files, so the names it knows stay
        in memory: an idle scan costs a directory listing, not a query."""
        for found in self.watcher.scan(self._known):
            if self.stopping.is_set():
                return
            record = self._register(found)
            self._known.add(found.name)
            self._split(channel, record, first_seen=found.first_seen)
        self._sweep()

    def _register(self, found: InputFile) -> FileRecord:
        log.info("new input file %s (%d bytes)", found.name, found.size)
        return self.ledger.register_file(found.name, found.size, found.mtime)

    def _split(
        self, channel: BlockingChannel, record: FileRecord, first_seen: float | None = None
    ) -> None:
        source = self.settings.input / record.name
        lines: int | None = record.lines_split
        chunks = record.chunks_split
        started = time.monotonic()
        self.splitting = record.name
        try:
            identity = SourceIdentity(record.size_bytes, record.mtime)
            if change := changed_since(source, record.size_bytes, record.mtime):
                raise CorruptInput(change)
            for chunk in split_file(
                source, self.settings.workspace, record.file_id, self.settings.chunk_lines,
                self.settings.chunk_level, skip_lines=record.lines_split, first_seq=chunks,
                on_block=self.progress.beat,
            ):  # fmt: skip
                job_id = self.ledger.record_chunk(record.file_id, chunk)
                lines, chunks = chunk.lines_after, chunk.seq + 1
                self.chunks.add(OpenChunk(
                    job_id, chunk.path, chunk.byte_size, chunk.source_offset or 0, chunk.tail,
                    owned=chunk.source_offset is None,
                    source=None if chunk.source_offset is None else identity,
                ))  # fmt: skip
                message = broker.JobMessage(
                    job_id, record.file_id, record.name, chunk.seq, chunk.first_line,
                    chunk.line_count, chunk.byte_size, chunk.raw_size, chunk.head_skip,
                )  # fmt: skip
                self._publish(channel, message)
                if first_seen is not None:  # a new file: how soon did its first job go out?
                    master_metrics.FIRST_JOB_SECONDS.observe(time.monotonic() - first_seen)
                    first_seen = None
                self.progress.beat()
                if not self._wait_for_room():
                    return  # stopping: the file stays 'splitting' and resumes on the next start
        except InputError as exc:
            log.error("%s: %s (the %d chunks cut before it still load)", record.name, exc, chunks)
            self.ledger.fail_file(record.file_id, str(exc), lines, chunks)
            return
        finally:
            self.splitting = ""
        self.ledger.finish_split(record.file_id, lines, chunks)
        log.info(
            "%s: split into %d chunks%s in %.1fs", record.name, chunks,
            f", {lines} lines," if lines is not None else "", time.monotonic() - started,
        )  # fmt: skip

    def _publish(self, channel: BlockingChannel, message: broker.JobMessage) -> None:
        broker.publish_job(channel, self.settings.queue, message)
        self.ledger.mark_published(message.job_id)
        self.published += 1
        master_metrics.JOBS_PUBLISHED.inc()

    def _wait_for_room(self) -> bool:
        """Hold the splitter while ``max_ready_chunks`` chunks wait: the workspace stays bounded."""
        assert self._connection is not None
        while len(self.chunks) - self._failed_jobs >= self.settings.max_ready_chunks:
            if self.stopping.is_set():
                return False
            self._connection.process_data_events(time_limit=0.2)
            self.progress.beat()  # the splitter waits for workers on purpose
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
        self._failed_jobs = self.ledger.count_failed_jobs()

    def _check_queues(self, channel: BlockingChannel) -> None:
        """Export queue depths; mark dead-lettered jobs failed in the ledger (a worker killed on
        its last delivery could not); the letters stay in the queue until a retry."""
        now = time.monotonic()
        if now - self._last_dead_letter_check < QUEUE_CHECK_INTERVAL:
            return
        self._last_dead_letter_check = now
        waiting = channel.queue_declare(self.settings.queue, passive=True)
        master_metrics.QUEUE_MESSAGES.set(waiting.method.message_count)
        depth = dead_letters.depth(channel, self.settings.queue)
        master_metrics.DEAD_LETTERS.set(depth)
        if not depth:
            return
        letters = dead_letters.sort_out(channel, self.settings.queue, remove=lambda _: False)
        by_reason: dict[str, list[int]] = {}
        for letter in letters:
            if letter.job is not None:
                by_reason.setdefault(letter.reason, []).append(letter.job.job_id)
        for reason, job_ids in by_reason.items():
            if marked := self.ledger.mark_dead(job_ids, reason):
                log.error("%d dead-lettered job(s) marked failed: %s", marked, reason)

    def _export_ledger(self) -> None:
        """Refresh the gauges of the whole load (the ledger's view, all workers together)."""
        now = time.monotonic()
        if now - self._last_ledger_export < LEDGER_EXPORT_INTERVAL:
            return
        self._last_ledger_export = now
        master_metrics.publish_ledger(status.summary(self.settings.pg_dsn))

    def _remove_orphan_chunks(self) -> None:
        """At start, delete chunk files no open job uses (done just before a crash, or cut
        halfway: ``.part``). A resumed split writes its chunks anew."""
        folder = self.settings.workspace / "chunks"
        if not folder.is_dir():
            return
        keep = {chunk.path.name for chunk in map(self.chunks.get, self.chunks.job_ids()) if chunk}
        for path in folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
                log.info("removed orphan chunk %s", path.name)

    def _recover_open_jobs(self) -> None:
        """Re-open the chunks of jobs not done (after a restart, from ledger and workspace)."""
        for record in self.ledger.open_jobs():
            job = record.message
            if self.chunks.get(job.job_id):
                continue
            if record.source_offset is not None:  # passed through: served from the source
                source = self.settings.input / job.file_name
                served = OpenChunk(job.job_id, source, job.byte_size, record.source_offset,
                                   record.tail, owned=False, source=record.source)  # fmt: skip
                self.chunks.add(served)
                continue
            path = chunk_path(self.settings.workspace, job.file_id, job.seq)
            if not path.exists():
                log.error("job %d: chunk %s is missing from the workspace", job.job_id, path)
                continue
            self.chunks.add(OpenChunk(job.job_id, path, path.stat().st_size))
