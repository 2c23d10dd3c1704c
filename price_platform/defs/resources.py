"""Typed Dagster resources shared by the domains: the platform database and the data set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import dagster as dg
import psycopg2.extensions
import sqlalchemy as sa

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.postgres import PostgresServer
from price_platform.settings import Settings, default
from price_platform.warehouse import connect, platform_server


class Warehouse(dg.ConfigurableResource):
    """The platform's PostgreSQL database (schemas ``price_data``, ``model_registry``, ``monitoring``).

    ``database_url`` names the server; left empty, the embedded server of the settings'
    ``home`` is started (or reused). Migrations are applied on first use.
    """

    database_url: str | None = None
    database_name: str = default("database_name")
    home: str = str(default("home"))
    embedded_port: int = default("embedded_port")

    @classmethod
    def from_settings(cls, settings: Settings) -> Warehouse:
        return cls(
            database_url=settings.database_url,
            database_name=settings.database_name,
            home=str(settings.home),
            embedded_port=settings.embedded_port,
        )

    @cached_property
    def server(self) -> PostgresServer:
        settings = Settings(
            database_url=self.database_url,
            database_name=self.database_name,
            home=self.home,
            embedded_port=self.embedded_port,
        )
        return platform_server(settings)

    @property
    def dsn(self) -> str:
        """libpq connection string of the platform database."""
        return self.server.dsn()

    @contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A transaction: committed when the block succeeds, rolled back when it raises."""
        with connect(self.dsn) as connection:
            yield connection

    @cached_property
    def engine(self) -> sa.Engine:
        """SQLAlchemy engine (psycopg2) for pandas reads and writes."""
        return sa.create_engine(self.server.url(), pool_pre_ping=True)


class Dataset(dg.ConfigurableResource):
    """The price data set the platform runs on, described by a YAML file."""

    path: str

    @cached_property
    def spec(self) -> DatasetSpec:
        return load_dataset(self.path)
