"""Reference statistics in PostgreSQL: computed once per reference, read by every drift report against it.

A reference is identified by :func:`reference_key`: the champion version, its window of
``price_data.features`` partitions, the latest load of those partitions (a reloaded training
month is a new reference) and the columns compared. ``monitoring.reference_sets`` holds one
row per reference (and the multivariate model fitted on it), ``monitoring.reference_statistics``
one row per column with its sketch or category counts (migration 018).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import psycopg2.extensions
from psycopg2.extras import execute_values

from price_platform.monitoring.drift import CategoricalReference, NumericReference, Reference


def reference_key(model_version: str | None, window_label: str, loads: str, columns: list[str]) -> str:
    """A stable key of one reference: what it was measured for, over which loaded rows and columns."""
    text = json.dumps([model_version, window_label, loads, columns])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(connection: psycopg2.extensions.connection, key: str) -> tuple[Reference, dict | None] | None:
    """The stored reference of ``key`` and its multivariate model, or ``None`` when it was never stored."""
    with connection.cursor() as cursor:
        cursor.execute("select rows, multivariate from monitoring.reference_sets where reference_key = %s", (key,))
        found = cursor.fetchone()
        if found is None:
            return None
        rows, multivariate = found
        cursor.execute(
            "select feature, kind, rows, points, below, at_or_below, psi_edges, categories, counts"
            " from monitoring.reference_statistics where reference_key = %s order by position",
            (key,),
        )
        columns = cursor.fetchall()
    numeric, categorical, target = {}, {}, None
    for feature, kind, count, points, below, at_or_below, psi_edges, categories, counts in columns:
        if kind == "categorical":
            categorical[feature] = CategoricalReference(pd.Index(categories, dtype=object), np.asarray(counts, np.int64))
            continue
        sketch = NumericReference(
            points=np.asarray(points, np.float64), below=np.asarray(below, np.int64),
            at_or_below=np.asarray(at_or_below, np.int64), psi_edges=np.asarray(psi_edges, np.float64), rows=int(count),
        )
        if kind == "target":
            target = sketch
        else:
            numeric[feature] = sketch
    return Reference(numeric=numeric, categorical=categorical, rows=int(rows), target=target), multivariate


def store(
    connection: psycopg2.extensions.connection, key: str, reference: Reference, *, model_version: str | None,
    window_label: str, multivariate: dict | None = None,
) -> None:
    """Write a reference's statistics under ``key`` (in the caller's transaction; a stored key is kept)."""
    rows = []
    for position, (kind, name, column) in enumerate(_columns(reference)):
        if isinstance(column, CategoricalReference):
            rows.append((key, position, name, kind, int(column.counts.sum()), None, None, None, None,
                         [str(value) for value in column.categories], column.counts.tolist()))
        else:
            rows.append((key, position, name, kind, column.rows, column.points.tolist(), column.below.tolist(),
                         column.at_or_below.tolist(), column.psi_edges.tolist(), None, None))
    with connection.cursor() as cursor:
        cursor.execute(
            "insert into monitoring.reference_sets (reference_key, model_version, window_label, rows, multivariate)"
            " values (%s, %s, %s, %s, %s) on conflict (reference_key) do nothing returning reference_key",
            (key, model_version, window_label, reference.rows, None if multivariate is None else json.dumps(multivariate)),
        )
        if cursor.fetchone() is None:  # another run stored it first
            return
        execute_values(
            cursor,
            "insert into monitoring.reference_statistics (reference_key, position, feature, kind, rows, points, below,"
            " at_or_below, psi_edges, categories, counts) values %s",
            rows,
        )


def load_or_build(
    connection: psycopg2.extensions.connection, key: str, build: Callable[[], tuple[Reference, dict | None]], *,
    model_version: str | None, window_label: str,
) -> tuple[Reference, dict | None, bool]:
    """The stored reference of ``key``, else ``build()``'s, stored; and whether it was built now."""
    found = load(connection, key)
    if found is not None:
        return *found, False
    reference, multivariate = build()
    store(connection, key, reference, model_version=model_version, window_label=window_label,
          multivariate=multivariate)
    return reference, multivariate, True


def _columns(reference: Reference) -> list[tuple[str, str, NumericReference | CategoricalReference]]:
    columns: list[tuple[str, str, NumericReference | CategoricalReference]] = [
        *(("numeric", name, column) for name, column in reference.numeric.items()),
        *(("categorical", name, column) for name, column in reference.categorical.items()),
    ]
    if reference.target is not None:
        columns.append(("target", "target", reference.target))
    return columns
