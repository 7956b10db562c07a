"""Logging set-up, the same in every process (the pool's children configure their own)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s"


def configure(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    # pika narrates every connection step at INFO and logs each failed connection attempt at
    # ERROR with a traceback; Protheon logs one warning per outage itself, with its backoff.
    logging.getLogger("pika").setLevel(max(logging.WARNING, logging.root.level))
    for noisy in ("pika.adapters.blocking_connection", "pika.adapters.utils"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
