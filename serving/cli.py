"""``price-platform serve``: the prediction API under uvicorn, in one or several worker processes.

Workers share one listening socket. On SIGTERM each worker first answers ``/ready`` with 503
(and closes kept-alive connections after their current response) for ``drain_seconds``, so a
load balancer stops sending, then shuts down without resetting a connection
(:meth:`DrainingServer.shutdown`), lets the requests in flight finish and writes its buffered
prediction logs before it exits. A worker that dies on its own (a crash,
the OOM killer) is replaced at once; more than ``MAX_RESTARTS`` in ``RESTART_WINDOW_SECONDS``
stop the server with exit code 1, so a supervisor sees the crash loop.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import struct
import sys
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
#: At shutdown, how long a kept-alive connection with no request on it stays open for one more
#: (answered with ``Connection: close``) before the server closes it. Above httpx's 5 s pool
#: expiry, so such a client drops an idle connection itself before the server would.
IDLE_CLOSE_SECONDS = 6.0
#: At shutdown, how long connection handshakes already under way get to complete into the accept queue.
HANDSHAKE_SECONDS = 0.2
#: Longest wait for the event loop to take the connections queued on the listening socket.
ACCEPT_QUEUE_SECONDS = 2.0
_CONNECTION_CLOSE = (b"connection", b"close")
_SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>; the socket module does not name it
#: Classic BPF socket filter that drops TCP segments with SYN set and ACK clear (new connection
#: attempts) and passes everything else: ``ldb [13]; and #0x12; jeq #0x02, drop, pass``. A
#: listening TCP socket's filter sees segments from the TCP header on.
_DROP_NEW_CONNECTIONS = ((0x30, 0, 0, 13), (0x54, 0, 0, 0x12), (0x15, 0, 1, 0x02), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF))


class DrainingServer(uvicorn.Server):
    """A uvicorn server that reports not-ready for a while before it begins its graceful shutdown, and resets no connection.

    uvicorn's own shutdown closes the listening socket, which makes the kernel reset every
    connection still in its accept queue, and closes each connection with no request in flight
    at once, so a request the client has just sent on it (or that waits unread in the socket)
    gets a reset. Here, instead: every response carries ``Connection: close`` from the drain on;
    new connection attempts are dropped by a socket filter (the client's retried SYN then finds
    the port closed: refused, nothing sent) while the connections already queued are accepted,
    and only then is the socket closed; a connection with no request in flight is answered once
    more (and closed after that answer) or closed after ``IDLE_CLOSE_SECONDS`` with nothing on it.
    """

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
        self._close_after_each_response()
        log.info("draining for %.1f s before shutting down", self.drain_seconds)
        threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame)).start()

    def _close_after_each_response(self) -> None:
        """Make every response from now on carry ``Connection: close`` (uvicorn then closes the connection after it)."""
        if _CONNECTION_CLOSE not in self.config.encoded_headers:
            self.config.encoded_headers = [*self.config.encoded_headers, _CONNECTION_CLOSE]  # kept by the 1 s refresh
            self.server_state.default_headers = [*self.server_state.default_headers, _CONNECTION_CLOSE]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown (``uvicorn.Server.shutdown``, 0.55), with connections closed as the class says."""
        log.info("Shutting down")
        self._close_after_each_response()
        listeners = {sock.fileno(): sock for server in self.servers for sock in server.sockets}
        listeners.update({sock.fileno(): sock for sock in sockets or []})
        if sys.platform == "linux":
            await _take_queued_connections(list(listeners))
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        loop = asyncio.get_running_loop()
        for connection in list(self.server_state.connections):
            cycle = connection.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False  # closed after its answer
                continue
            if connection.timeout_keep_alive_task is not None:  # a request arriving cancels this, and is answered
                connection.timeout_keep_alive_task.cancel()
            connection.timeout_keep_alive_task = loop.call_later(IDLE_CLOSE_SECONDS, connection.timeout_keep_alive_handler)
        await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                await self._wait_tasks_to_complete()
        except TimeoutError:
            log.error("Cancel %s running task(s), timeout graceful shutdown exceeded", len(self.server_state.tasks))
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


async def _take_queued_connections(listeners: list[int]) -> None:
    """Stop new connections to the listening sockets ``listeners`` (descriptors) and let the loop accept the queued ones."""
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *step) for step in _DROP_NEW_CONNECTIONS))
    filter_program = struct.pack("HL", len(_DROP_NEW_CONNECTIONS), ctypes.addressof(program))  # struct sock_fprog
    handles = [socket.socket(fileno=os.dup(descriptor)) for descriptor in listeners]
    try:
        for handle in handles:
            handle.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, filter_program)
        await asyncio.sleep(HANDSHAKE_SECONDS)
        deadline = time.monotonic() + ACCEPT_QUEUE_SECONDS
        while any(map(_accept_queue, handles)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        for handle in handles:
            handle.close()


def _accept_queue(listener: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue (``tcpi_unacked`` of its ``TCP_INFO`` on Linux)."""
    return struct.unpack_from("I", listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0]


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
