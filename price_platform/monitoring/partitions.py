"""Monthly partitions of ``monitoring.predictions``: created ahead of time, detached by retention.

The prediction log is range-partitioned on ``created_at`` (migration 001). Month partitions
are named ``predictions_yYYYYmMM``. When the table also has a DEFAULT partition (serving's
safety net, so that a write never fails for want of a month), rows of a month that landed
there before its partition existed are moved into the new partition in the same transaction,
because PostgreSQL refuses to attach a range that the DEFAULT partition still holds rows of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

import psycopg2.extensions
from psycopg2 import sql

PARENT = "predictions"
SCHEMA = "monitoring"


@dataclass(frozen=True)
class Partition:
    """One attached partition of the prediction log and its bounds (``None`` for DEFAULT)."""

    name: str
    lower: date | None
    upper: date | None


def month_start(day: date, months_ahead: int = 0) -> date:
    """First day of the month ``months_ahead`` months after ``day``'s month."""
    index = day.year * 12 + day.month - 1 + months_ahead
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def attached_partitions(connection: psycopg2.extensions.connection) -> list[Partition]:
    """The partitions attached to ``monitoring.predictions``, DEFAULT included."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            select child.relname, pg_get_expr(child.relpartbound, child.oid)
            from pg_inherits
            join pg_class child on child.oid = pg_inherits.inhrelid
            where pg_inherits.inhparent = %s::regclass
            order by child.relname
            """,
            (f"{SCHEMA}.{PARENT}",),
        )
        rows = cursor.fetchall()
    found = []
    for name, bound in rows:
        if bound == "DEFAULT":
            found.append(Partition(name, None, None))
        else:  # FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')
            lower, upper = (_utc_date(part.split("'")[1]) for part in bound.split(" TO "))
            found.append(Partition(name, lower, upper))
    return found


def ensure_month_partitions(
    connection: psycopg2.extensions.connection, first: date, last: date
) -> list[str]:
    """Create the month partitions from ``first``'s month to ``last``'s month that are missing.

    Rows already sitting in the DEFAULT partition for such a month are moved into it. Returns
    the names of the partitions created. Runs in the caller's transaction.
    """
    existing = attached_partitions(connection)
    default = next((p.name for p in existing if p.lower is None), None)
    covered = {p.lower for p in existing if p.lower is not None}
    created = []
    month = month_start(first)
    with connection.cursor() as cursor:
        cursor.execute("select pg_advisory_xact_lock(hashtext('monitoring.predictions partitions'))")
        while month <= month_start(last):
            upper = month_start(month, 1)
            if month not in covered:
                _create(cursor, month, upper, default)
                created.append(partition_name(month))
            month = upper
    return created


def detach_older_than(connection: psycopg2.extensions.connection, keep_months: int, today: date) -> list[str]:
    """Detach the month partitions that ended before the last ``keep_months`` months.

    Detached tables stay in the ``monitoring`` schema (archive or drop them at leisure);
    queries on ``monitoring.predictions`` no longer see or scan them. Returns their names.
    """
    if keep_months < 1:
        raise ValueError(f"keep_months must be at least 1, got {keep_months}")
    cutoff = month_start(today, -(keep_months - 1))
    detached = []
    with connection.cursor() as cursor:
        for partition in attached_partitions(connection):
            if partition.upper is not None and partition.upper <= cutoff:
                cursor.execute(
                    sql.SQL("alter table {}.{} detach partition {}.{}").format(
                        sql.Identifier(SCHEMA), sql.Identifier(PARENT), sql.Identifier(SCHEMA),
                        sql.Identifier(partition.name),
                    )
                )
                detached.append(partition.name)
    return detached


def _utc_date(bound: str) -> date:
    """The UTC date of a bound as ``pg_get_expr`` prints it (``2026-11-01 00:00:00+00``)."""
    moment = datetime.fromisoformat(bound + (":00" if re.search(r"[+-]\d\d$", bound) else ""))
    return moment.astimezone(timezone.utc).date() if moment.tzinfo else moment.date()


def _utc_bound(day: date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


def _create(cursor: psycopg2.extensions.cursor, month: date, upper: date, default: str | None) -> None:
    name = sql.Identifier(partition_name(month))
    schema = sql.Identifier(SCHEMA)
    parent = sql.Identifier(PARENT)
    bounds = (_utc_bound(month), _utc_bound(upper))
    if default is None:
        cursor.execute(
            sql.SQL("create table {}.{} partition of {}.{} for values from (%s) to (%s)").format(
                schema, name, schema, parent
            ),
            bounds,
        )
        return
    # Build the table detached, move the month's rows out of DEFAULT, then attach.
    cursor.execute(
        sql.SQL("create table {}.{} (like {}.{} including defaults including constraints)").format(
            schema, name, schema, parent
        )
    )
    cursor.execute(
        sql.SQL(
            "with moved as (delete from {}.{} where created_at >= %s and created_at < %s returning *)"
            " insert into {}.{} select * from moved"
        ).format(schema, sql.Identifier(default), schema, name),
        bounds,
    )
    cursor.execute(
        sql.SQL("alter table {}.{} attach partition {}.{} for values from (%s) to (%s)").format(
            schema, parent, schema, name
        ),
        bounds,
    )
