"""``price-platform serve``: the prediction API under uvicorn, in one or several worker processes.

Workers share one listening socket. On SIGTERM each worker first answers ``/ready`` with 503
(and closes kept-alive connections after their current response) for ``drain_seconds``, so a
load balancer stops sending, then stops accepting, lets the requests in flight finish and
writes its buffered prediction logs before it exits. A worker that dies on its own (a crash,
the OOM killer) is replaced at once; more than ``MAX_RESTARTS`` in ``RESTART_WINDOW_SECONDS``
stop the server with exit code 1, so a supervisor sees the crash loop.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

from price_platform.operations.tls import uvicorn_tls
from price_platform.settings import get_settings

log = logging.getLogger(__name__)

APP = "serving.app:app_from_environment"
#: More worker restarts than this within ``RESTART_WINDOW_SECONDS`` stop the server (exit 1): a crash loop.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0


class DrainingServer(uvicorn.Server):
    """A uvicorn server that reports not-ready for a while before it begins its graceful shutdown."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining or not self.started or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        services = _services(self.config.loaded_app)
        if services is not None:
            services.draining = True
        log.info("draining for %.1f s before shutting down", self.drain_seconds)
        threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame)).start()


def _services(app: Any) -> Any:
    while app is not None and not hasattr(getattr(app, "state", None), "services"):
        app = getattr(app, "app", None)
    return app.state.services if app is not None else None


def config(host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration of one worker (HTTPS when the settings name a certificate and key)."""
    settings = get_settings()
    return uvicorn.Config(
        APP, factory=True, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, timeout_graceful_shutdown=60, timeout_keep_alive=settings.keep_alive_seconds,
        backlog=2048, **uvicorn_tls(settings),
    )


def _worker(host: str, port: int, drain_seconds: float, sock: socket.socket) -> None:
    DrainingServer(config(host, port), drain_seconds).run(sockets=[sock])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings = get_settings()
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--host", default=settings.api_host)
    parser.add_argument("--port", type=int, default=settings.api_port)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    if not settings.database_url:  # start the embedded server once, here, and point the workers at it
        from price_platform.postgres import ensure_server

        server = ensure_server(settings)
        os.environ["PRICE_PLATFORM_DATABASE_URL"] = server.server_url.render_as_string(hide_password=False)
    if args.workers <= 1:
        DrainingServer(config(args.host, args.port), settings.drain_seconds).run()
        return 0
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="price-platform-metrics-"))
    sock = config(args.host, args.port).bind_socket()
    context = multiprocessing.get_context("spawn")

    def start(index: int) -> multiprocessing.process.BaseProcess:
        worker = context.Process(
            target=_worker, args=(args.host, args.port, settings.drain_seconds, sock), name=f"worker-{index}"
        )
        worker.start()
        return worker

    workers = [start(i) for i in range(args.workers)]
    stopping = False

    def forward(sig: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid and worker.is_alive():
                os.kill(worker.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("serving on http://%s:%s with %d workers", args.host, args.port, args.workers)
    restarts: list[float] = []
    while not stopping or any(worker.is_alive() for worker in workers):
        for index, worker in enumerate(workers):
            if stopping or worker.is_alive():
                continue
            now = time.monotonic()
            restarts = [at for at in restarts if now - at < RESTART_WINDOW_SECONDS] + [now]
            if len(restarts) > MAX_RESTARTS:
                log.error("%d worker restarts within %.0f s: giving up", len(restarts) - 1, RESTART_WINDOW_SECONDS)
                forward(signal.SIGTERM, None)
                for other in workers:
                    other.join(90)
                sock.close()
                return 1
            log.error("%s exited with %s; starting another", worker.name, worker.exitcode)
            workers[index] = start(index)
        time.sleep(0.2)
    sock.close()
    return max((worker.exitcode or 0 for worker in workers), default=0)
