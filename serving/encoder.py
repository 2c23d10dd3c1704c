"""The blend's fitted ``ColumnTransformer`` as lookups and one vectorised numeric transform.

:mod:`serving.blend` reads the fitted encoder into blocks (:class:`Numeric`, :class:`Table`,
in the encoder's output order). :class:`EncoderPlan` regroups them for speed without
changing a number:

* every numeric output column (imputed and scaled, or ``log1p`` then scaled) is one column
  of a single (rows, columns) transform: gather, fill NaN, ``log1p`` where needed, subtract
  the mean, divide by the scale, the same operations in the same order as scikit-learn;
* every categorical input gets one vocabulary (the union of the categories its blocks know,
  then "unknown" and "missing") and one table whose row for a code holds all the encoded
  columns of that input (one-hot, ordinal, grade score, target encoding), so a record costs
  one dictionary look-up per categorical input however many blocks read it.

Records are laid out internally as [numeric columns, then each input's table columns];
:attr:`EncoderPlan.output_order` maps that layout back to the encoder's column order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Numeric:
    """Numeric columns: fill missing, optionally ``log1p`` of the non-negative part, then scale."""

    sources: list[str]  # input or derived feature names
    fill: np.ndarray  # value of a missing entry (after log1p_nonnegative's own fill when log)
    log: bool
    mean: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True)
class Table:
    """One categorical input column as rows of a lookup table (categories, then unknown, then missing)."""

    source: int  # index of the input feature in the record
    rows: dict[Any, int]  # category (None included) -> row of ``table``
    unknown: int
    missing: int  # row of a float NaN
    table: np.ndarray  # (categories + 2, output width)


class Vocabulary(dict):
    """Category -> code; a category it does not know is ``unknown``, a float NaN is ``missing``."""

    def __init__(self, categories: Sequence[Any]) -> None:
        super().__init__((category, code) for code, category in enumerate(categories))
        self.unknown = len(categories)
        self.missing = len(categories) + 1

    def __missing__(self, value: Any) -> int:
        return self.missing if value != value else self.unknown  # noqa: PLR0124 (NaN test)


@dataclass(frozen=True)
class Lookup:
    """All encoded columns of one categorical input: code -> one row of ``table``."""

    source: int
    vocabulary: Vocabulary
    table: np.ndarray  # (codes, columns)
    rows: list[list[float]]  # ``table`` as Python lists, for one record at a time


@dataclass
class EncoderPlan:
    """The encoder as numeric inputs, derived features, one numeric transform and per-input lookups."""

    inputs: list[int]  # record positions read as numbers
    input_names: list[str]
    derived: dict[str, Callable[[Any], Any]]  # derived features the numeric columns use, in order
    numeric_source: np.ndarray  # per numeric column: index into [inputs..., derived...]
    numeric_fill: np.ndarray
    numeric_log: np.ndarray  # columns to take log1p of (indices)
    numeric_mean: np.ndarray
    numeric_scale: np.ndarray
    lookups: list[Lookup]
    output_order: np.ndarray  # encoder column j is internal column output_order[j]

    def __post_init__(self) -> None:
        self.width = len(self.numeric_source) + sum(lookup.table.shape[1] for lookup in self.lookups)

    def encode_many(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """The internal layout of ``rows`` (float64, one row per record)."""
        count = len(rows)
        matrix = np.empty((count, self.width), dtype=np.float64)
        if not count:
            return matrix
        columns = list(zip(*rows, strict=True))  # one tuple per input feature
        values = np.array([columns[i] for i in self.inputs], dtype=np.float64)  # (inputs, rows); None becomes NaN
        if self.derived:
            named = dict(zip(self.input_names, values, strict=True))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                extra = [np.broadcast_to(np.asarray(f(named), dtype=np.float64), (count,)) for f in self.derived.values()]
            values = np.vstack([values, *extra])
        end = len(self.numeric_source)
        matrix[:, :end] = self._numeric(values[self.numeric_source].T)
        for lookup in self.lookups:
            codes = np.fromiter(map(lookup.vocabulary.__getitem__, columns[lookup.source]), dtype=np.intp, count=count)
            start, end = end, end + lookup.table.shape[1]
            # straight into the matrix's columns (indexing then assigning copies twice); "clip" lets take write
            # into the strided columns without a buffer, and changes nothing: the vocabulary's codes are all rows
            np.take(lookup.table, codes, axis=0, out=matrix[:, start:end], mode="clip")
        return matrix

    def encode_few(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """:meth:`encode_many` for a handful of records: record by record, where numpy's per-call cost would dominate."""
        return np.array([self._encode_one(row) for row in rows], dtype=np.float64).reshape(len(rows), self.width)

    def _encode_one(self, row: tuple[Any, ...]) -> list[float]:
        values = [math.nan if row[i] is None else float(row[i]) for i in self.inputs]
        if self.derived:
            named = dict(zip(self.input_names, values, strict=True))
            try:
                values.extend(float(function(named)) for function in self.derived.values())
            except ArithmeticError:  # Python raises where numpy gives inf/NaN: numpy's answer is the pipeline's
                return self.encode_many([row])[0].tolist()
        encoded = self._numeric(np.array(values)[self.numeric_source]).tolist()
        for lookup in self.lookups:
            encoded += lookup.rows[lookup.vocabulary[row[lookup.source]]]
        return encoded

    def _numeric(self, values: np.ndarray) -> np.ndarray:
        """Fill, ``log1p`` and scale gathered numeric values (a fresh array, changed in place)."""
        np.copyto(values, self.numeric_fill, where=np.isnan(values))
        if self.numeric_log.size:
            values[..., self.numeric_log] = np.log1p(np.maximum(values[..., self.numeric_log], 0.0))
        values -= self.numeric_mean
        values /= self.numeric_scale
        return values


def plan(
    blocks: Sequence[Numeric | Table], features: list[str], derived: dict[str, Callable[[Any], Any]], derived_inputs: dict[str, list[str]]
) -> EncoderPlan:
    """Regroup the encoder's blocks (in its output order) into an :class:`EncoderPlan`."""
    numeric = [block for block in blocks if isinstance(block, Numeric)]
    names = [name for block in numeric for name in block.sources]
    used_derived = [name for name in derived if name in names]
    input_names = list(dict.fromkeys(
        [name for name in names if name not in derived]
        + [source for name in used_derived for source in derived_inputs[name]]
    ))
    value_index = {name: i for i, name in enumerate([*input_names, *used_derived])}
    # internal positions of the encoder's columns, block by block
    numeric_position = iter(range(len(names)))
    tables = [block for block in blocks if isinstance(block, Table)]
    sources = list(dict.fromkeys(block.source for block in tables))
    widths = {source: 0 for source in sources}
    table_offset: dict[int, int] = {}  # id(block) -> its first column within its source's table
    for block in tables:
        table_offset[id(block)] = widths[block.source]
        widths[block.source] += block.table.shape[1]
    source_start, start = {}, len(names)
    for source in sources:
        source_start[source], start = start, start + widths[source]
    order: list[int] = []
    for block in blocks:
        if isinstance(block, Numeric):
            order.extend(next(numeric_position) for _ in block.sources)
        else:
            first = source_start[block.source] + table_offset[id(block)]
            order.extend(range(first, first + block.table.shape[1]))
    flags = np.concatenate([np.full(len(block.sources), block.log) for block in numeric]) if numeric else np.zeros(0, bool)
    return EncoderPlan(
        inputs=[features.index(name) for name in input_names],
        input_names=input_names,
        derived={name: derived[name] for name in used_derived},
        numeric_source=np.array([value_index[name] for name in names], dtype=np.intp),
        numeric_fill=_concat([block.fill for block in numeric]),
        numeric_log=np.flatnonzero(flags),
        numeric_mean=_concat([block.mean for block in numeric]),
        numeric_scale=_concat([block.scale for block in numeric]),
        lookups=[_lookup(source, [block for block in tables if block.source == source]) for source in sources],
        output_order=np.array(order, dtype=np.intp),
    )


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts]) if parts else np.zeros(0)


def _lookup(source: int, tables: list[Table]) -> Lookup:
    """One vocabulary over the categories all ``tables`` of an input know, and their columns side by side."""
    vocabulary = Vocabulary(list(dict.fromkeys(category for table in tables for category in table.rows)))
    categories = list(vocabulary)
    table = np.hstack([
        np.vstack([
            table.table[[table.rows.get(category, table.unknown) for category in categories]],
            table.table[[table.unknown, table.missing]],
        ])
        for table in tables
    ])
    return Lookup(source=source, vocabulary=vocabulary, table=table, rows=table.tolist())
