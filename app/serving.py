"""`dxf-bridge serve --workers N`: N uvicorn processes, each accepting on a socket of its own.

uvicorn's own supervisor binds one listening socket and hands it to every worker. Whichever
worker wakes first accepts every connection waiting in the queue (uvloop accepts until the
queue is empty), so the few long-lived keep-alive connections of a bulk loader or a reverse
proxy tend to end on one worker while the others idle: bench/search_bench.py saw 8 loader
connections all on one of two workers, and one busy core instead of two.

Here each worker binds its own socket to the same address with SO_REUSEPORT (Linux 3.9 and
later; nginx's `listen ... reuseport`), and the kernel spreads new connections over the
listening sockets by a hash of their addresses. The supervising process holds the port (a
bound socket in the same group that never listens, so `--port 0` gives every worker the same
port), starts the workers, replaces one that dies, and stops them all on SIGINT or SIGTERM
(each worker shuts down gracefully, as uvicorn does). Where SO_REUSEPORT is missing, uvicorn's
supervisor serves instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ["serve_workers"]

APP = "app.main:app_from_environment"  # each worker builds its app from DXF_* settings
_FAST_FAILURE_SECONDS = 10.0  # a worker that dies this soon after starting is not restarted
_STOP_SECONDS = 30.0  # how long stopping workers get to finish their requests

log = logging.getLogger("dxf.serve")


def serve_workers(options: dict[str, Any], workers: int) -> int:
    """Run `workers` API processes on options["host"]:options["port"] until SIGINT or SIGTERM;
    the exit status (1 when a worker could not stay up)."""
    import uvicorn

    if not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, factory=True, workers=workers, **options)
        return 0
    holder = _reuseport_socket(options["host"], options["port"])
    options = {**options, "port": holder.getsockname()[1]}
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_worker, args=(options,), name="dxf-bridge-worker")
        process.start()
        return process, time.monotonic()

    running = [start() for _ in range(workers)]
    status = 0
    try:
        while not stopping:
            wait([p.sentinel for p, _ in running], timeout=0.5)  # a worker ended, or poll
            for i, (process, started) in enumerate(running):
                if process.is_alive() or stopping:
                    continue
                if time.monotonic() - started < _FAST_FAILURE_SECONDS:
                    log.error("worker exited at start; stopping", extra={"code": process.exitcode})
                    status, stopping = 1, True
                    break
                log.warning("worker exited; starting another", extra={"code": process.exitcode})
                running[i] = start()
    finally:
        for process, _ in running:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process, _ in running:
            process.join(_STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        holder.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


def _worker(options: dict[str, Any]) -> None:
    import uvicorn

    config = uvicorn.Config(APP, factory=True, **options)
    sock = _reuseport_socket(options["host"], options["port"])
    uvicorn.Server(config).run(sockets=[sock])  # the server listens on it


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
