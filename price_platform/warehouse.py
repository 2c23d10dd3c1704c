"""The platform database: versioned migrations, connections, and connection strings fit to print.

Migrations are the numbered ``migrations/*.sql`` files, applied in order, each once, inside
one transaction under an advisory lock so that concurrent starters never apply one twice.
Every connection gives up after ``CONNECT_TIMEOUT_SECONDS`` when the server does not answer
(libpq's default is to wait for ever), so a blackholed database cannot pile up waiting threads.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg2
import psycopg2.extensions

from price_platform.postgres import PostgresServer, ensure_server
from price_platform.settings import Settings

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 7_310_001
#: Seconds a new connection waits for the server before it fails (libpq ``connect_timeout``).
CONNECT_TIMEOUT_SECONDS = 5
_KEY_VALUE_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    folder = resources.files("price_platform") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(dsn: str) -> list[str]:
    """Apply the migrations the database does not have yet; return the names applied."""
    applied: list[str] = []
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        cursor.execute("select to_regclass('public.schema_migrations') is not null")
        if not cursor.fetchone()[0]:  # (a service role without DDL rights only reads the table its owner made)
            cursor.execute(
                "create table public.schema_migrations ("
                " version integer primary key, name text not null, applied_at timestamptz not null default now())"
            )
        cursor.execute("select version from public.schema_migrations")
        done = {row[0] for row in cursor.fetchall()}
        for version, name, statements in migration_files():
            if version in done:
                continue
            cursor.execute(statements)
            cursor.execute("insert into public.schema_migrations (version, name) values (%s, %s)", (version, name))
            applied.append(name)
    for name in applied:
        log.info("applied migration %s", name)
    return applied


def platform_server(settings: Settings) -> PostgresServer:
    """The platform's server, started when embedded, with its databases created and migrated.

    Every process that reads or writes the platform database starts here.
    """
    server = ensure_server(settings)
    migrate(server.dsn())
    return server


@contextmanager
def connect(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection that commits when the block succeeds and rolls back when it raises."""
    connection = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        with connection:
            yield connection
    finally:
        connection.close()


def redacted_dsn(dsn: str) -> str:
    """``dsn`` (a URL or a libpq ``key=value`` string) with any password replaced by ``***``: for output and logs."""
    if "://" not in dsn:
        return _KEY_VALUE_PASSWORD.sub(r"\1***", dsn)
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = urllib.parse.urlencode([(name, "***" if name.lower() == "password" else value) for name, value in pairs], safe="*")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
