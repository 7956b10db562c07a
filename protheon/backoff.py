"""How long to wait before reconnecting to RabbitMQ or PostgreSQL."""

from __future__ import annotations


class Backoff:
    """1 s, doubling up to ``cap``; back to the start once a round of work succeeds again.

    Resetting after a working round, not when the work loop returns (it never does while all
    is well), matters: otherwise the waits of one outage carry over to the next, and a master
    that weathered a RabbitMQ restart would sit out a later PostgreSQL restart for the full cap;
    and not merely on connecting, or a fault that recurs right after it would retry every 1 s.
    """

    def __init__(self, first: float = 1.0, cap: float = 10.0) -> None:
        self.first, self.cap = first, cap
        self._current = first

    def next(self) -> float:
        value = self._current
        self._current = min(self._current * 2, self.cap)
        return value

    def reset(self) -> None:
        self._current = self.first
