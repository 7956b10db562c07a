"""One consumer process: RabbitMQ on the main thread, the job on a worker thread.

pika's BlockingConnection is not thread-safe and must keep servicing heartbeats while a job runs
for minutes, so the main thread only does I/O; the job runs on a single worker thread and hands
its ack back with ``add_callback_threadsafe``. The ack is sent only after the job's transaction
committed; if the connection died meanwhile, the redelivered job is found done and just acked.
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

from protheon import broker
from protheon.config import Settings
from protheon.worker.chunk_client import ChunkClient
from protheon.worker.job import JobOutcome, JobRunner
from protheon.worker.writer import JobWriter

log = logging.getLogger(__name__)

RETRY_DELAY = 2.0  # before a failed job goes back to the queue, so a hot loop cannot happen
MAX_BACKOFF = 30.0


class Consumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.worker_name
        self.stopping = False
        self.in_flight = 0
        self.jobs_done = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self._client = ChunkClient(settings.master, self.name)
        self._writer = JobWriter(settings.pg_dsn, self.name)
        self._runner = JobRunner(self._client, self._writer, should_stop=lambda: self.stopping)

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                log.warning("second signal: exiting now; unfinished jobs go back to the queue")
                os._exit(1)
            log.info("%s: draining (no new jobs; finishing %d)", signal.Signals(signum).name,
                     self.in_flight)  # fmt: skip
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        backoff = 1.0
        try:
            while not self.stopping:
                try:
                    self._consume()
                    backoff = 1.0
                except (pika.exceptions.AMQPError, OSError) as exc:
                    if self.stopping:
                        break
                    log.warning("broker connection lost (%s); reconnecting in %.0fs", exc, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self._executor.shutdown(wait=True)
            self._writer.close()
            self._client.close()
        log.info("stopped after %d jobs", self.jobs_done)
        return 0

    def _consume(self) -> None:
        connection = broker.connect(self.settings.amqp_url, f"protheon-worker {self.name}")
        try:
            channel = connection.channel()
            broker.declare_queues(channel, self.settings.queue, self.settings.delivery_limit)
            channel.basic_qos(prefetch_count=self.settings.prefetch)
            on_message = functools.partial(self._on_message, connection)
            tag = channel.basic_consume(self.settings.queue, on_message, auto_ack=False)
            log.info("consuming from %s", self.settings.queue)
            consuming = True
            while consuming or self.in_flight:
                connection.process_data_events(time_limit=0.5)
                if self.stopping and consuming:
                    channel.basic_cancel(tag)
                    consuming = False
        finally:
            self.in_flight = 0
            if connection.is_open:
                connection.close()

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
        self.in_flight += 1
        future = self._executor.submit(self._runner.run, job)

        def finished(done: Future[JobOutcome]) -> None:
            callback = functools.partial(self._settle, connection, channel, method, job, done)
            # If the connection is gone the broker redelivers; the ledger makes that harmless.
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.add_callback_threadsafe(callback)

        future.add_done_callback(finished)

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
            requeue = functools.partial(self._requeue, channel, method.delivery_tag)
            self.in_flight += 1
            connection.call_later(RETRY_DELAY, requeue)
            return
        outcome = done.result()
        channel.basic_ack(method.delivery_tag)
        if outcome.result is not None:
            self.jobs_done += 1
            result = outcome.result
            log.info(
                "job %d (%s #%d): %d PGCRs, %d duplicates, %d rejects in %.2fs",
                job.job_id, job.file_name, job.seq, result.pgcrs, result.duplicates,
                result.rejects, outcome.seconds,
            )  # fmt: skip
        else:
            log.info("job %d: %s; acked", job.job_id, outcome.note)
        if outcome.done:
            self._executor.submit(self._client.complete, job.job_id)

    def _requeue(self, channel: BlockingChannel, delivery_tag: int) -> None:
        self.in_flight -= 1
        if channel.is_open:
            channel.basic_nack(delivery_tag, requeue=True)
