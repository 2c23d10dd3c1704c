"""The dbt CLI resource, connected to the platform's PostgreSQL through environment variables."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster_dbt import DbtCliResource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

from price_platform.defs.resources import Warehouse

#: Session settings of dbt's connections (libpq's ``PGOPTIONS``): the hash aggregates of the
#: ``unique`` tests and the index builds of a ten-million-row features table stay in memory
#: instead of spilling to disk (PostgreSQL's defaults are 4 MB and 64 MB).
SESSION_OPTIONS = "-c work_mem=256MB -c maintenance_work_mem=1GB"


class PlatformDbt(DbtCliResource):
    """``DbtCliResource`` whose dbt processes connect to the ``warehouse`` database.

    ``dbt/profiles.yml`` reads the connection from ``DBT_PG_*`` environment variables; this
    resource derives them from the warehouse's server URL for every dbt invocation, so the same
    project runs on the embedded server and on any other PostgreSQL.
    """

    warehouse: Warehouse

    def connection_environment(self) -> dict[str, str]:
        """The ``DBT_PG_*`` variables ``profiles.yml`` reads, for the warehouse database, and the session settings."""
        server = self.warehouse.server
        url = server.server_url
        return {
            "DBT_PG_HOST": url.host or "127.0.0.1",
            "DBT_PG_PORT": str(url.port or 5432),
            "DBT_PG_USER": url.username or "postgres",
            "DBT_ENV_SECRET_PG_PASSWORD": url.password or "",
            "DBT_PG_DBNAME": server.database_name,
            "PGOPTIONS": " ".join(filter(None, [os.environ.get("PGOPTIONS"), SESSION_OPTIONS])),
        }

    def cli(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        """Start a dbt command with the warehouse connection in its environment."""
        with _environment(self.connection_environment()):
            return super().cli(args, **kwargs)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (dbt copies ``os.environ`` when it starts)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
