"""RabbitMQ plumbing shared by master and worker: connection, queue topology, job messages.

The job queue is a quorum queue: it survives broker restarts, and ``x-delivery-limit`` stops a
poison job from being redelivered forever; past the limit RabbitMQ moves it to the dead-letter
queue ``<queue>.dead``. Messages are small JSON documents; chunk bytes travel over gRPC.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

MESSAGE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class JobMessage:
    job_id: int
    file_id: int
    file_name: str
    seq: int
    first_line: int | None  # None: a passed-through chunk, numbered once the chunks before it are
    line_count: int | None  # None: counted by the worker
    byte_size: int
    raw_size: int
    head_skip: int = 0  # decompressed bytes at the chunk's start that belong to the chunk before

    def encode(self) -> bytes:
        return json.dumps({"v": MESSAGE_VERSION, **dataclasses.asdict(self)}).encode()

    @classmethod
    def decode(cls, body: bytes) -> JobMessage:
        """Parse a message; ValueError when it is not one of ours (it will be dead-lettered)."""
        try:
            document: dict[str, Any] = json.loads(body)
            if document.pop("v") != MESSAGE_VERSION:
                raise ValueError("unsupported message version")
            return cls(**document)
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a Protheon job message: {exc}") from None


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def connect(amqp_url: str, name: str) -> pika.BlockingConnection:
    params = pika.URLParameters(amqp_url)
    params.client_properties = {"connection_name": name}
    if "heartbeat" not in amqp_url:
        params.heartbeat = 30
    if "blocked_connection_timeout" not in amqp_url:
        params.blocked_connection_timeout = 300
    return pika.BlockingConnection(params)


def declare_queues(channel: BlockingChannel, queue: str, delivery_limit: int) -> None:
    """Declare the job queue and its dead-letter queue; idempotent, called by master and workers."""
    dead = dead_letter_queue(queue)
    channel.queue_declare(dead, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_declare(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        },
    )


def publish_job(channel: BlockingChannel, queue: str, message: JobMessage) -> None:
    """Publish persistently; with confirms enabled this returns only once the broker has it.

    Raises pika's UnroutableError/NackError if the broker refuses it.
    """
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=message.encode(),
        properties=pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=str(message.job_id),
        ),
        mandatory=True,
    )
