"""One consumer process: RabbitMQ on the main thread, the job on a worker thread.

pika's BlockingConnection is not thread-safe and must keep servicing heartbeats while a job runs
for minutes, so the main thread only does I/O; the job runs on a single worker thread and hands
its ack back with ``add_callback_threadsafe``. The ack is sent only after the job's transaction
committed; if the connection died meanwhile, the redelivered job is found done and just acked.

Lifecycle: ``READY=1`` once consuming; on SIGTERM/SIGINT, drain (cancel the consumer, finish
the jobs in hand, exit 0) within ``drain_seconds``; on a second signal or at the deadline, close
the broker connection (RabbitMQ requeues what was not acked; PostgreSQL rolls back the open
transaction) and exit 1 at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from protheon import broker, metrics, rpc_auth
from protheon.backoff import Backoff
from protheon.config import Settings
from protheon.sdnotify import Notifier, Progress, Watchdog
from protheon.worker import metrics as worker_metrics
from protheon.worker.chunk_client import ChunkClient
from protheon.worker.job import JobOutcome, JobRunner
from protheon.worker.writer import JobWriter

log = logging.getLogger(__name__)

RETRY_DELAY = 2.0  # before a failed job goes back to the queue, so a hot loop cannot happen
MAX_BACKOFF = 10.0
STATUS_INTERVAL = 2.0


class Aborted(Exception):
    """Raised on the I/O thread to leave at once (second signal or drain deadline)."""


class Consumer:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.name = settings.worker_name
        self.notifier = notifier or Notifier()
        self.progress = Progress()
        self.stopping = False
        self.aborting = False
        self.drain_deadline = 0.0
        self.in_flight = 0
        self.jobs_done = 0
        self.pgcrs_done = 0
        self.running: broker.JobMessage | None = None
        self._started = time.monotonic()
        self._backoff = Backoff(cap=MAX_BACKOFF)
        self._last_status = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self._client = ChunkClient(settings.master, self.name, rpc_auth.load(settings))
        self._writer = JobWriter(settings.pg_dsn, self.name)
        self._runner = JobRunner(
            self._client,
            self._writer,
            should_stop=lambda: self.stopping,
            on_progress=self.progress.beat,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_drain_request)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self.aborting = True
            return
        self.before_worker_shutdown()

    def _on_drain_request(self, signum: int, frame: FrameType | None) -> None:
        """SIGUSR1, from the pool parent: drain, and never escalate (systemd may also have
        sent this process a SIGTERM of its own)."""
        if not self.stopping:
            self.before_worker_shutdown()

    def before_worker_shutdown(self) -> None:
        """Start draining: take no new job, finish those in hand, within the deadline."""
        self.stopping = True
        metrics.DRAINING.set(1)
        self.drain_deadline = time.monotonic() + self.settings.drain_seconds
        log.info("draining: no new jobs; finishing %d within %.0fs", self.in_flight,
                 self.settings.drain_seconds)  # fmt: skip
        self.notifier.stopping(f"draining: finishing {self.in_flight} job(s)")

    def run(self) -> int:
        watchdog = Watchdog.start_for(self.notifier, self.progress)
        metrics.track_lifecycle(self.progress, watchdog)
        try:
            while not self.stopping:
                try:
                    self._consume()
                except (pika.exceptions.AMQPError, OSError) as exc:
                    if self.stopping:
                        break
                    delay = self._backoff.next()
                    log.warning("broker connection lost (%s); reconnecting in %.0fs", exc, delay)
                    self.notifier.status(f"waiting for RabbitMQ ({exc})")
                    self._sleep(delay)
        except Aborted as exc:
            log.warning("%s: leaving now; unfinished jobs go back to the queue", exc)
            logging.shutdown()
            os._exit(1)  # the job thread may be inside a database call: do not wait for it
        finally:
            if watchdog is not None:
                watchdog.stop()
        self._executor.shutdown(wait=True)
        self._writer.close()
        self._client.close()
        log.info("stopped after %d jobs", self.jobs_done)
        self.notifier.close()
        return 0

    def _sleep(self, seconds: float) -> None:
        """Wait (alive: waiting for a dependency is not a hang), leaving early on a signal."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self.stopping:
            self.progress.beat()
            time.sleep(0.2)

    # -- consuming ---------------------------------------------------------------------------

    def _consume(self) -> None:
        connection = broker.connect(self.settings.amqp_url, f"protheon-worker {self.name}")
        try:
            channel = connection.channel()
            broker.declare_queues(channel, self.settings.queue, self.settings.delivery_limit)
            channel.basic_qos(prefetch_count=self.settings.prefetch)
            on_message = functools.partial(self._on_message, connection)
            tag = channel.basic_consume(self.settings.queue, on_message, auto_ack=False)
            log.info("consuming from %s", self.settings.queue)
            self.notifier.ready(f"consuming from {self.settings.queue}")
            consuming = True
            while consuming or self.in_flight:
                connection.process_data_events(time_limit=0.5)
                self._backoff.reset()  # a round with the broker worked: short waits again
                worker_metrics.IN_FLIGHT.set(self.in_flight)
                if not self.in_flight:
                    self.progress.beat()  # idle and polling: alive
                self._check_stop(connection)
                if self.stopping and consuming:
                    channel.basic_cancel(tag)
                    consuming = False
                self._report_status()
        finally:
            self.in_flight = 0
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.close()

    def _check_stop(self, connection: pika.BlockingConnection) -> None:
        if not self.stopping:
            return
        remaining = self.drain_deadline - time.monotonic()
        if self.aborting or remaining <= 0:
            reason = "second signal" if self.aborting else "drain deadline passed"
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
            raise Aborted(reason)
        self.notifier.extend_timeout(remaining + 5)

    def _report_status(self) -> None:
        now = time.monotonic()
        if now - self._last_status < STATUS_INTERVAL:
            return
        self._last_status = now
        rate = self.pgcrs_done / max(now - self._started, 1e-9)
        job = self.running
        doing = f"job {job.job_id} ({job.file_name} #{job.seq})" if job else "idle"
        if self.stopping:
            doing = f"draining, {doing}"
        self.notifier.status(
            f"{doing} | {self.in_flight} in flight | {self.jobs_done} jobs,"
            f" {self.pgcrs_done} PGCRs, {rate:.0f} PGCRs/s"
        )

    def _on_message(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        try:
            job = broker.JobMessage.decode(body)
        except ValueError as exc:
            log.error("rejecting message %r: %s", properties.message_id, exc)
            channel.basic_reject(method.delivery_tag, requeue=False)  # → dead-letter queue
            return
        if method.redelivered:
            worker_metrics.JOBS_REDELIVERED.inc()
        deliveries = int((properties.headers or {}).get("x-delivery-count", 0)) + 1
        final = deliveries > self.settings.delivery_limit
        self.in_flight += 1
        future = self._executor.submit(self._run, job, final)

        def finished(done: Future[JobOutcome]) -> None:
            callback = functools.partial(self._settle, connection, channel, method, job, done)
            # If the connection is gone the broker redelivers; the ledger makes that harmless.
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.add_callback_threadsafe(callback)

        future.add_done_callback(finished)

    def _run(self, job: broker.JobMessage, final: bool) -> JobOutcome:
        """On the job thread; ``running`` feeds the STATUS line."""
        self.running = job
        try:
            return self._runner.run(job, final)
        finally:
            self.running = None

    def _settle(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        method: Basic.Deliver,
        job: broker.JobMessage,
        done: Future[JobOutcome],
    ) -> None:
        """On the I/O thread: ack a committed job, or requeue a failed one after a pause."""
        self.in_flight -= 1
        if not channel.is_open:
            return
        error = done.exception()
        if error is not None:
            log.error("job %d (%s #%d) failed: %s", job.job_id, job.file_name, job.seq, error)
            worker_metrics.JOBS_FAILED.inc()
            requeue = functools.partial(self._requeue, channel, method.delivery_tag)
            self.in_flight += 1
            connection.call_later(0 if self.stopping else RETRY_DELAY, requeue)
            return
        outcome = done.result()
        channel.basic_ack(method.delivery_tag)
        if outcome.result is not None:
            self.jobs_done += 1
            result = outcome.result
            self.pgcrs_done += result.pgcrs
            worker_metrics.record_job(result, outcome.seconds)
            log.info(
                "job %d (%s #%d): %d PGCRs, %d duplicates, %d rejects in %.2fs",
                job.job_id, job.file_name, job.seq, result.pgcrs, result.duplicates,
                result.rejects, outcome.seconds,
            )  # fmt: skip
        else:
            log.info("job %d: %s; acked", job.job_id, outcome.note)
            if outcome.done:
                worker_metrics.JOBS_ALREADY_DONE.inc()
        if outcome.done:
            self._executor.submit(self._client.complete, job.job_id)

    def _requeue(self, channel: BlockingChannel, delivery_tag: int) -> None:
        """Past the queue's delivery limit, RabbitMQ dead-letters instead of requeueing."""
        self.in_flight -= 1
        if channel.is_open:
            channel.basic_nack(delivery_tag, requeue=True)
