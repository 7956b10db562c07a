"""``--concurrency N``: N consumer processes, because parsing is CPU-bound and holds the GIL.

The parent only supervises: on SIGTERM it asks the children to drain with SIGUSR1, which never
escalates to an abort (systemd's default KillMode sends SIGTERM to every process of the unit as
well, and a terminal's Ctrl-C reaches the whole process group); it restarts a child that
crashes, and exits when all children have. Under systemd each process is rather its own unit
instance (``protheon-worker@N``), which runs with concurrency 1.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from protheon import logs
from protheon.config import Settings
from protheon.sdnotify import Notifier

log = logging.getLogger(__name__)

RESTART_DELAY = 2.0


def run_consumer(settings: Settings) -> int:
    from protheon import metrics
    from protheon.worker.consumer import Consumer

    port = settings.worker_metrics_port
    metrics.serve(settings.metrics_host, port + settings.worker_index - 1 if port else 0, "worker")
    consumer = Consumer(settings)
    consumer.install_signal_handlers()
    return consumer.run()


def _child_main(settings: Settings, log_level: str) -> None:
    logs.configure(log_level)
    raise SystemExit(run_consumer(settings))


def run_workers(settings: Settings) -> int:
    if settings.concurrency == 1:
        return run_consumer(settings)
    context = multiprocessing.get_context("spawn")  # no inherited gRPC/pika state
    stopping = False
    # The parent speaks to systemd for the group; children must not claim to be the service.
    notifier = Notifier()
    for variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(variable, None)

    def start(index: int) -> BaseProcess:
        child_settings = settings.replace(
            worker_name=f"{settings.worker_name}/{index}", worker_index=index
        )
        process = context.Process(
            target=_child_main, args=(child_settings, settings.log_level), name=f"worker-{index}"
        )
        process.start()
        return process

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        notifier.stopping("draining worker processes")
        for process in children.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGUSR1)

    children = {index: start(index) for index in range(1, settings.concurrency + 1)}
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier.ready(f"{len(children)} worker processes")
    exit_code = 0
    while children:
        time.sleep(0.2)
        for index, process in list(children.items()):
            if process.is_alive():
                continue
            process.join()
            code = process.exitcode or 0
            if stopping:
                exit_code = max(exit_code, abs(code))
                del children[index]
            elif code != 0:
                log.error("worker %d exited with %s; restarting it", index, code)
                time.sleep(RESTART_DELAY)
                children[index] = start(index)
            else:
                del children[index]
    return exit_code
