"""SIGTERM under keep-alive load: the server closes its connections gracefully, so no client sees a reset.

A load of 32 httpx clients, each on its own kept-alive connection, runs through a SIGTERM.
Every request a client sent must be answered (or, once the server stopped listening, be
refused before it was sent): a connection reset, or a connection closed with a request on it,
is a request the client cannot know was handled. uvicorn's own shutdown failed about one
request per client here (closing the listening socket resets its accept queue; closing an
idle connection resets the request just sent on it). A few more clients keep an idle
connection through the drain and send on it once the server is shutting down: answered, with
``Connection: close``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from test_serving_support import Champion, Server, champion, records, server_env  # noqa: F401 (fixture)

CLIENTS = 32
IDLE_CLIENTS = 4


@dataclass
class Failure:
    """A request that was sent and not answered."""

    client: int
    at: float
    error: str
    reset: bool  # a TCP reset (ECONNRESET) somewhere in the error's chain


def _is_reset(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class Run:
    """What the clients of :func:`keep_alive_load` saw."""

    answered: int = 0
    answered_after_sigterm: int = 0
    refused: int = 0  # connection attempts the server no longer accepted: nothing was sent
    failures: list[Failure] = field(default_factory=list)  # requests sent and not answered
    idle_answers: list[tuple[int, str]] = field(default_factory=list)  # (status, Connection header) on idle connections


def keep_alive_load(url: str, bodies: list[dict], *, seconds: float, sigterm_at: float, server: Server) -> Run:
    """``CLIENTS`` loops posting ``bodies``, each on one kept-alive connection of its own, through a SIGTERM.

    Besides, ``IDLE_CLIENTS`` clients make one request before the SIGTERM (sent ``sigterm_at``
    seconds in, once the load runs) and one more on the same, by then idle, connection once the
    server logs that it is shutting down.
    """
    run = Run()
    sigterm: dict[str, float] = {}

    async def main() -> None:
        start = time.monotonic()
        deadline = start + seconds
        stopped = asyncio.Event()
        idle_ready: list[bool] = []

        async def client(number: int) -> None:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
                index = number
                while time.monotonic() < deadline and not stopped.is_set():
                    try:
                        response = await http.post("/predict", json=bodies[index % len(bodies)])
                        assert response.status_code == 200, response.text
                        run.answered += 1
                        run.answered_after_sigterm += "sent" in sigterm
                    except httpx.ConnectError:
                        run.refused += 1
                        stopped.set()
                    except httpx.TransportError as error:
                        run.failures.append(Failure(number, time.monotonic() - start, repr(error), _is_reset(error)))
                        await asyncio.sleep(0.05)
                    index += CLIENTS

        async def idle_client() -> None:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=60)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
                first = await http.get("/health")
                assert first.status_code == 200 and first.headers.get("connection") != "close"  # kept alive
                idle_ready.append(True)
                while "Shutting down" not in server.log_path.read_text() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                try:
                    response = await http.get("/health")
                    run.idle_answers.append((response.status_code, response.headers.get("connection", "")))
                except httpx.TransportError as error:
                    run.failures.append(Failure(-1, time.monotonic() - start, f"idle: {error!r}", _is_reset(error)))

        async def terminate() -> None:  # once the load runs and the idle connections are open (a slow host is slow)
            await asyncio.sleep(max(0.0, start + sigterm_at - time.monotonic()))
            while (len(idle_ready) < IDLE_CLIENTS or run.answered < CLIENTS) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            sigterm["sent"] = time.monotonic()

        await asyncio.gather(*(client(i) for i in range(CLIENTS)), *(idle_client() for _ in range(IDLE_CLIENTS)), terminate())

    asyncio.run(main())
    return run


def test_sigterm_under_keep_alive_load_resets_no_connection(champion: Champion, tmp_path: Path) -> None:
    bodies = records(champion.spec, champion.holdout.head(200))
    server = Server(server_env(champion.settings, drain_seconds=2.0), log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        run = keep_alive_load(server.url, bodies, seconds=60.0, sigterm_at=4.0, server=server)
        exit_code = server.process.wait(60)
    finally:
        server.stop()
    assert not run.failures, (len(run.failures), run.failures[:10])
    assert run.answered_after_sigterm > 0 and run.refused > 0, run  # the load ran through the drain and the shutdown
    assert run.idle_answers == [(200, "close")] * IDLE_CLIENTS, run.idle_answers
    assert exit_code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
