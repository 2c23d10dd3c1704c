"""Connections to the platform database: a server that does not answer fails the connection, and DSNs fit to print."""

from __future__ import annotations

import socket
import threading

import psycopg2
import pytest

from price_platform.warehouse import CONNECT_TIMEOUT_SECONDS, connect, redacted_dsn


def test_a_server_that_never_answers_fails_the_connection() -> None:
    """Without a connect timeout libpq waits for ever on a server that accepts and stays silent."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    outcome: dict[str, BaseException] = {}

    def attempt() -> None:
        try:
            with connect(f"postgresql://postgres@127.0.0.1:{port}/test"):
                pass
        except BaseException as error:  # noqa: BLE001 (handed to the test thread)
            outcome["error"] = error

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_SECONDS * 6)  # only so that a missing timeout fails instead of hanging
    listener.close()
    assert not thread.is_alive(), "connect() still waits for a server that never answers"
    assert isinstance(outcome.get("error"), psycopg2.OperationalError), outcome
    assert "timeout expired" in str(outcome["error"])


@pytest.mark.parametrize(
    ("dsn", "printed"),
    [
        ("postgresql://app:s3cr%40t@db:5432/price?sslmode=require", "postgresql://app:***@db:5432/price?sslmode=require"),
        ("postgresql+psycopg2://app:pw@db/price?password=pw2", "postgresql+psycopg2://app:***@db/price?password=***"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("host=db password=s3cret user=app", "host=db password=*** user=app"),
        ("host=db password='a b' user=app", "host=db password=*** user=app"),
    ],
)
def test_redacted_dsn_hides_the_password_only(dsn: str, printed: str) -> None:
    assert redacted_dsn(dsn) == printed
