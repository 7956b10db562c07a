"""Reading the dead-letter queue without consuming it, and taking chosen jobs out of it.

Jobs past the delivery limit wait in ``<queue>.dead`` until an operator retries them, so the
queue's depth is what alerting watches. To see what is in it, every message is fetched with
``basic_get`` and held unacknowledged (so none is returned twice), then each is either removed
(ack) or put back (nack with requeue).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from protheon import broker

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    delivery_tag: int
    job: broker.JobMessage | None  # None: not a Protheon job message
    reason: str


def _reason(headers: dict[str, Any] | None) -> str:
    deaths = (headers or {}).get("x-death") or [{}]
    death = deaths[0]
    reason = death.get("reason", "unknown")
    if isinstance(reason, bytes):
        reason = reason.decode()
    return f"dead-lettered ({reason}) from {death.get('queue', '?')!s}"


def sort_out(
    channel: BlockingChannel, queue: str, remove: Callable[[DeadLetter], bool]
) -> list[DeadLetter]:
    """Fetch every dead letter; ack those ``remove`` picks, put the others back; return all."""
    dead_queue = broker.dead_letter_queue(queue)
    letters: list[DeadLetter] = []
    while True:
        method, properties, body = channel.basic_get(dead_queue, auto_ack=False)
        if method is None:
            break
        try:
            job: broker.JobMessage | None = broker.JobMessage.decode(body)
        except ValueError:
            job = None
        letters.append(DeadLetter(method.delivery_tag, job, _reason(properties.headers)))
    for letter in letters:
        if remove(letter):
            channel.basic_ack(letter.delivery_tag)
        else:
            channel.basic_nack(letter.delivery_tag, requeue=True)
    return letters


def depth(channel: BlockingChannel, queue: str) -> int:
    result = channel.queue_declare(broker.dead_letter_queue(queue), passive=True)
    return int(result.method.message_count)
