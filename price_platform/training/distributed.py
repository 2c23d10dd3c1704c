"""Training at data sizes one pandas frame cannot hold: features read partition by partition.

Two engines, both XGBoost's own:

- **one process**: an :class:`xgboost.DataIter` reads ``price_data.features`` one partition
  at a time (binary ``COPY ... TO STDOUT`` of fixed-width fields, :class:`EncodedReader`), encodes it to a float32 matrix and
  feeds an :class:`xgboost.QuantileDMatrix` (spilling the encoded partitions to a temporary
  folder for XGBoost's later passes), so memory holds the quantised matrix and one
  partition, never the table as Python objects;
- **Dask** (``xgboost.dask``) when ``PRICE_PLATFORM_DASK_SCHEDULER`` names a scheduler or the
  features exceed ``dask_min_rows``: each Dask partition is one feature partition, read by
  the worker that holds it.

The encoding is the one the platform's model pipeline applies (derived features, numeric
passthrough, ordinal categories with -1 for unknown/missing; :mod:`price_platform.modeling`),
with the categories fixed up front, so the booster drops into that pipeline and what is
registered and served is the usual fitted ``Pipeline`` (:func:`as_pipeline`).
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import xgboost as xgb
from psycopg2 import sql
from sklearn.pipeline import Pipeline

from price_platform.datasets import DatasetSpec
from price_platform.modeling import (
    build_xgboost_pipeline,
    compile_expression,
    numeric_inputs,
)
from price_platform.settings import Settings

log = logging.getLogger(__name__)

#: The fixed model of the scale benchmark and of large retrains: 100 trees of depth 6.
DEFAULT_PARAMS = {"objective": "reg:squarederror", "tree_method": "hist", "max_depth": 6, "eta": 0.1, "max_bin": 256, "seed": 0}
DEFAULT_ROUNDS = 100
LABEL = "_label"
#: Partitions read and encoded ahead of XGBoost on the first walk, each on its own connection.
READ_AHEAD = 2


class FeatureEncoder:
    """Features -> the float32 matrix the model's ``encode`` step produces, and log(target) as label."""

    def __init__(self, spec: DatasetSpec, categories: dict[str, list[str]]) -> None:
        self.spec = spec
        self.categories = categories
        self.derived = {name: compile_expression(text) for name, text in spec.derived.items()}
        self.columns = [*numeric_inputs(spec), *spec.categorical]
        self._category_arrays = {name: pa.array(values, pa.string()) for name, values in categories.items()}

    def matrix(self, table: pa.Table) -> np.ndarray:
        """Encoded inputs, one row per record, columns as :attr:`columns`."""
        numeric = {name: table[name].to_numpy(zero_copy_only=False).astype("float64") for name in self.spec.numeric}
        out = np.empty((table.num_rows, len(self.columns)), dtype=np.float32)
        position = 0
        for name in self.spec.numeric:
            out[:, position] = numeric[name]
            position += 1
        for function in self.derived.values():
            out[:, position] = function(numeric)
            position += 1
        for name in self.spec.categorical:
            out[:, position] = category_codes(table[name], self._category_arrays[name])
            position += 1
        return out

    def label(self, table: pa.Table) -> np.ndarray:
        return np.log(table[self.spec.target].to_numpy(zero_copy_only=False).astype("float64")).astype(np.float32)


def category_codes(column: pa.Array | pa.ChunkedArray, categories: pa.Array) -> np.ndarray:
    """Each value's position in ``categories``, -1 when missing or unknown (as ``pd.Categorical(...).codes``).

    Vectorised in Arrow: a dictionary-encoded column maps its dictionary once and takes the
    codes by index; plain text is looked up value by value in a hash table.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            mapping = pc.fill_null(pc.index_in(chunk.dictionary, value_set=categories), -1)
            codes = pc.take(mapping, chunk.indices)
        else:  # plain text (or an all-missing column of type null)
            codes = pc.index_in(chunk.cast(pa.string()), value_set=categories)
        parts.append(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)


def feature_categories(dsn: str, spec: DatasetSpec) -> dict[str, list[str]]:
    """Each categorical column's categories: the spec's ``allowed`` list, else the values in the features table."""
    categories = {}
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        for name, rule in spec.categorical.items():
            if rule.allowed is not None:
                categories[name] = sorted({value.strip() for value in rule.allowed})
                continue
            cursor.execute(
                sql.SQL("select distinct {0} from price_data.features where {0} is not null order by 1").format(
                    sql.Identifier(name)
                )
            )
            categories[name] = [row[0] for row in cursor.fetchall()]
    connection.close()
    return categories


def feature_partitions(dsn: str) -> list[tuple[str, int]]:
    """(partition key, rows) of ``price_data.features``, in key order."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select partition_key, count(*) from price_data.features group by 1 order by 1")
        found = [(str(key), int(rows)) for key, rows in cursor.fetchall()]
    connection.close()
    return found


def read_partition(
    dsn: str, spec: DatasetSpec, partition_key: str, *, dictionary: bool = False, limit: int | None = None
) -> pa.Table:
    """One partition's model inputs and target (its first ``limit`` rows), streamed with ``COPY`` and parsed by Arrow.

    ``dictionary=True`` reads the categorical columns dictionary-encoded (what the encoder
    reads fastest; each distinct text once instead of once per row).
    """
    columns = [*spec.features, spec.target]
    query = sql.SQL("copy (select {} from price_data.features where partition_key = {}{}) to stdout with (format csv, header true)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Literal(partition_key),
        sql.SQL("") if limit is None else sql.SQL(" limit {}").format(sql.Literal(limit)),
    )
    buffer = io.BytesIO()
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.copy_expert(query.as_string(cursor), buffer)
    connection.close()
    buffer.seek(0)
    text = pa.dictionary(pa.int32(), pa.string()) if dictionary else pa.string()
    types = {name: pa.float64() for name in [*spec.numeric, spec.target]} | {name: text for name in spec.categorical}
    return pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(use_threads=False),  # one partition is small; threads cost more CPU than they save
        convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


#: The header of PostgreSQL's binary ``COPY`` (signature, flags, header extension length 0) and its trailer.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
BINARY_TRAILER = b"\xff\xff"
#: What a missing category is read as (``hashtextextended`` of any text is this only by a 2**-64 chance).
MISSING_HASH = 0


class ExactBuffer:
    """A write-only file of a known size: what ``COPY ... TO STDOUT`` writes, in one preallocated block."""

    def __init__(self, size: int) -> None:
        self.block = bytearray(size)
        self.view = memoryview(self.block)
        self.size = 0

    def write(self, chunk: bytes) -> int:
        end = self.size + len(chunk)
        if end > len(self.block):  # more rows than counted (written meanwhile): grow, as BytesIO would
            self.view.release()
            self.block.extend(bytes(max(end - len(self.block), len(self.block) // 8)))
            self.view = memoryview(self.block)
        self.view[self.size : end] = chunk
        self.size = end
        return len(chunk)

    def getbuffer(self) -> memoryview:
        return self.view[: self.size]


class EncodedReader:
    """One partition's encoded matrix and label in one binary ``COPY``, every field of fixed width.

    The CSV path (:func:`read_partition` + :meth:`FeatureEncoder.matrix`) spends more CPU in
    Python parsing text than PostgreSQL spends writing it. Here PostgreSQL sends numbers as
    binary ``float8`` (missing as NaN) and each category as its 64-bit ``hashtextextended``
    (missing as :data:`MISSING_HASH`), so every row has the same length and the whole
    partition is one numpy structured array (no parsing); hashes map to the encoder's
    category codes with a sorted lookup (unknown and missing -> -1). The result equals the
    CSV path's encoding value for value. With each partition's ``rows`` known, the bytes are
    received into one buffer of the exact size (no growing copies, which would raise the peak).
    """

    def __init__(self, dsn: str, encoder: FeatureEncoder, rows: Mapping[str, int] | None = None) -> None:
        self.dsn, self.encoder, self.rows = dsn, encoder, dict(rows or {})
        spec = encoder.spec
        self.lookups = {name: self._lookup(values) for name, values in encoder.categories.items()}
        numbers = [*spec.numeric, spec.target]
        fields = [("fields", ">i2")]
        for name in [*numbers, *spec.categorical]:
            fields += [(f"{name}.length", ">i4"), (name, ">f8" if name in numbers else ">i8")]
        self.record = np.dtype(fields)
        self.select = sql.SQL(", ").join(
            [sql.SQL("coalesce({}::float8, 'NaN')").format(sql.Identifier(name)) for name in numbers]
            + [
                sql.SQL("coalesce(hashtextextended({}::text, 0), {})").format(sql.Identifier(name), sql.Literal(MISSING_HASH))
                for name in spec.categorical
            ]
        )

    def _lookup(self, values: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(sorted hashes of the categories, each one's code), the hashes computed by PostgreSQL itself."""
        if not values:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        with psycopg2.connect(self.dsn) as connection, connection.cursor() as cursor:
            cursor.execute("select hashtextextended(value, 0) from unnest(%s::text[]) as value", (list(values),))
            hashes = np.array([row[0] for row in cursor.fetchall()], dtype=np.int64)
        connection.close()
        if len(np.unique(hashes)) < len(hashes) or MISSING_HASH in hashes:
            raise ValueError(f"category hashes collide in {values[:5]}...; cannot read these categories as hashes")
        order = np.argsort(hashes)
        return hashes[order], order.astype(np.int32)

    def records(self, partition_key: str) -> np.ndarray:
        """The partition as a structured array, one record per row (big-endian fields as PostgreSQL sends them)."""
        query = sql.SQL("copy (select {} from price_data.features where partition_key = {}) to stdout with (format binary)").format(
            self.select, sql.Literal(partition_key)
        )
        expected = self.rows.get(partition_key)
        buffer = io.BytesIO() if expected is None else ExactBuffer(len(BINARY_HEADER) + expected * self.record.itemsize + 2)
        with psycopg2.connect(self.dsn) as connection, connection.cursor() as cursor:
            cursor.copy_expert(query.as_string(cursor), buffer)
        connection.close()
        raw = buffer.getbuffer()
        body = len(raw) - len(BINARY_HEADER) - len(BINARY_TRAILER)
        if bytes(raw[: len(BINARY_HEADER)]) != BINARY_HEADER or bytes(raw[-2:]) != BINARY_TRAILER or body % self.record.itemsize:
            raise ValueError(f"unexpected binary COPY output for partition {partition_key} ({len(raw)} bytes)")
        return np.frombuffer(raw, dtype=self.record, count=body // self.record.itemsize, offset=len(BINARY_HEADER))

    def __call__(self, partition_key: str) -> tuple[np.ndarray, np.ndarray]:
        """(encoded inputs as :meth:`FeatureEncoder.matrix`, log target as :meth:`FeatureEncoder.label`)."""
        encoder, spec = self.encoder, self.encoder.spec
        records = self.records(partition_key)
        numeric = {name: records[name].astype(np.float64) for name in spec.numeric}
        out = np.empty((len(records), len(encoder.columns)), dtype=np.float32)
        position = 0
        for name in spec.numeric:
            out[:, position] = numeric[name]
            position += 1
        for function in encoder.derived.values():
            out[:, position] = function(numeric)
            position += 1
        for name in spec.categorical:
            hashes, codes = self.lookups[name]
            values = records[name].astype(np.int64)
            at = np.minimum(np.searchsorted(hashes, values), max(len(hashes) - 1, 0))
            out[:, position] = np.where(hashes[at] == values, codes[at], -1) if len(hashes) else -1
            position += 1
        return out, np.log(records[spec.target].astype(np.float64)).astype(np.float32)


class PartitionIter(xgb.DataIter):
    """Feeds XGBoost one encoded feature partition at a time.

    ``QuantileDMatrix`` walks its input several times (four with XGBoost 3: sketch, then
    pages); the first walk reads PostgreSQL and spills each encoded partition as ``.npy``
    into ``spill``, the later ones read those files back, so the database is read once and
    memory holds one partition (up to ``1 + READ_AHEAD`` on the first walk: with a ``pool``,
    the next partitions are read and encoded while XGBoost sketches the current one;
    PostgreSQL's ``COPY`` runs in the server and Arrow's parsing outside the GIL).
    """

    def __init__(
        self,
        read: Callable[[str], tuple[np.ndarray, np.ndarray]],
        keys: Sequence[str],
        spill: Path,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.read, self.keys, self.spill, self.pool = read, list(keys), spill, pool
        self.position = 0
        self.rows = 0
        self.pending: dict[int, Future] = {}
        super().__init__(release_data=True)

    def _files(self, position: int) -> tuple[Path, Path]:
        return self.spill / f"{position}.x.npy", self.spill / f"{position}.y.npy"

    def _encoded(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Read and encode one partition and spill it (in a pool thread when there is a pool)."""
        data, label = self.read(self.keys[position])
        data_file, label_file = self._files(position)
        np.save(label_file, label)
        np.save(data_file, data)  # last: its existence marks the partition as spilled
        return data, label

    def _start(self, position: int) -> None:
        if self.pool is not None and position < len(self.keys) and position not in self.pending and not self._files(position)[0].exists():
            self.pending[position] = self.pool.submit(self._encoded, position)

    def next(self, input_data: Callable) -> bool:
        if self.position == len(self.keys):
            return False
        waiting = self.pending.pop(self.position, None)
        data_file, label_file = self._files(self.position)
        if waiting is None and data_file.exists():  # later walks: the spilled copy, mapped rather than copied
            data, label = np.load(data_file, mmap_mode="r"), np.load(label_file)
        else:
            for ahead in range(1, READ_AHEAD + 1):
                self._start(self.position + ahead)
            data, label = waiting.result() if waiting is not None else self._encoded(self.position)
            self.rows += len(label)
        input_data(data=data, label=label)
        self.position += 1
        return True

    def reset(self) -> None:
        self.position = 0


def train_in_chunks(
    dsn: str, spec: DatasetSpec, keys: Sequence[str], encoder: FeatureEncoder, *, params: dict, rounds: int,
    rows: Mapping[str, int] | None = None,
) -> xgb.Booster:
    """One process: a ``QuantileDMatrix`` built partition by partition, then ``xgboost.train`` (``rows``: per partition, if known)."""
    with (
        tempfile.TemporaryDirectory(prefix="price-platform-train-") as spill,
        ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="read-features") as pool,
    ):
        iterator = PartitionIter(EncodedReader(dsn, encoder, rows), keys, Path(spill), pool)
        matrix = xgb.QuantileDMatrix(iterator, max_bin=params.get("max_bin", 256), nthread=params.get("nthread"))
    return xgb.train(params, matrix, num_boost_round=rounds)


def _encoded_partition(dsn: str, spec: DatasetSpec, categories: dict[str, list[str]], key: str) -> pd.DataFrame:
    encoder = FeatureEncoder(spec, categories)
    data, label = EncodedReader(dsn, encoder)(key)
    frame = pd.DataFrame(data, columns=encoder.columns)
    frame[LABEL] = label
    return frame


def train_on_dask(
    client, dsn: str, spec: DatasetSpec, keys: Sequence[str], encoder: FeatureEncoder, *, params: dict, rounds: int
) -> xgb.Booster:
    """``xgboost.dask`` over a Dask frame with one partition per feature partition, read by the workers."""
    import dask.dataframe as dd
    from xgboost import dask as dxgb

    meta = pd.DataFrame({name: pd.Series(dtype="float32") for name in [*encoder.columns, LABEL]})
    frame = dd.from_map(_encoded_partition, [dsn] * len(keys), [spec] * len(keys), [encoder.categories] * len(keys), list(keys), meta=meta)
    frame = frame.persist()
    matrix = dxgb.DaskQuantileDMatrix(client, frame[encoder.columns], frame[LABEL], max_bin=params.get("max_bin", 256))
    output = dxgb.train(client, params, matrix, num_boost_round=rounds, verbose_eval=False)
    return output["booster"]


def as_pipeline(booster: xgb.Booster, spec: DatasetSpec, categories: dict[str, list[str]], sample: pd.DataFrame) -> Pipeline:
    """The platform's usual fitted ``Pipeline`` whose regressor is ``booster``.

    The derive/encode steps are fitted on ``sample`` (a few rows of raw features) with the
    categories fixed, so they encode exactly as :class:`FeatureEncoder`; then the booster
    replaces the placeholder regressor.
    """
    pipeline = build_xgboost_pipeline(spec, {"n_estimators": 1})
    pipeline.set_params(encode__categorical__categories=[categories[name] for name in spec.categorical])
    pipeline.fit(sample[spec.features], sample[spec.target])
    pipeline.named_steps["model"].regressor_.load_model(bytearray(booster.save_raw("ubj")))
    return pipeline


@dataclass(frozen=True)
class LargeTraining:
    """The outcome of a large training: the booster, the pipeline around it, and what it took."""

    booster: xgb.Booster
    pipeline: Pipeline
    engine: str
    rows: int
    partitions: list[str]
    seconds: float


def use_dask(settings: Settings, rows: int) -> bool:
    """Dask when a scheduler is named, or when the features exceed the configured size."""
    return bool(settings.dask_scheduler) or rows >= settings.dask_min_rows


def train_large(
    settings: Settings,
    dsn: str,
    spec: DatasetSpec,
    partitions: Sequence[str] | None = None,
    *,
    params: dict | None = None,
    rounds: int = DEFAULT_ROUNDS,
    client=None,
) -> LargeTraining:
    """Fit the model on the given feature partitions (default: all) with the engine the size calls for."""
    started = time.perf_counter()
    available = dict(feature_partitions(dsn))
    keys = list(partitions) if partitions is not None else list(available)
    unknown = [key for key in keys if key not in available]
    if unknown or not keys:
        raise ValueError(f"no features for partitions {unknown or keys}: build the features first")
    rows = sum(available[key] for key in keys)
    params = {**DEFAULT_PARAMS, "nthread": settings.threads, **(params or {})}
    categories = feature_categories(dsn, spec)
    encoder = FeatureEncoder(spec, categories)
    if client is not None or use_dask(settings, rows):
        engine = "dask"
        with _DaskClient(settings, client) as dask_client:
            booster = train_on_dask(dask_client, dsn, spec, keys, encoder, params=params, rounds=rounds)
    else:
        engine = "chunked"
        booster = train_in_chunks(dsn, spec, keys, encoder, params=params, rounds=rounds, rows=available)
    sample = read_partition(dsn, spec, keys[0], limit=50).to_pandas()  # the pipeline's input example
    pipeline = as_pipeline(booster, spec, categories, sample)
    seconds = time.perf_counter() - started
    log.info("trained on %d rows in %d partitions with %s in %.1f s", rows, len(keys), engine, seconds)
    return LargeTraining(booster, pipeline, engine, rows, keys, seconds)


class _DaskClient:
    """The given Dask client, or one connected to the settings' scheduler (or a local cluster), closed after."""

    def __init__(self, settings: Settings, client) -> None:
        self.settings, self.given, self.owned = settings, client, []

    def __enter__(self):
        if self.given is not None:
            return self.given
        from distributed import Client, LocalCluster

        if self.settings.dask_scheduler:
            client = Client(self.settings.dask_scheduler)
        else:
            cluster = LocalCluster(n_workers=2, threads_per_worker=self.settings.threads, processes=True)
            self.owned.append(cluster)
            client = Client(cluster)
        self.owned.insert(0, client)
        return client

    def __exit__(self, *exc: object) -> None:
        for resource in self.owned:
            resource.close()


def predict_partitions(
    booster: xgb.Booster, dsn: str, spec: DatasetSpec, keys: Sequence[str], encoder: FeatureEncoder
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(log-price predictions, log-price labels) partition by partition, for evaluation at scale."""
    read = EncodedReader(dsn, encoder)
    for key in keys:
        data, label = read(key)
        yield booster.inplace_predict(data), label


def rmsle(booster: xgb.Booster, dsn: str, spec: DatasetSpec, keys: Sequence[str], encoder: FeatureEncoder) -> float:
    """Root mean squared log error over the given partitions, computed without holding them all."""
    total, count = 0.0, 0
    for predicted, actual in predict_partitions(booster, dsn, spec, keys, encoder):
        total += float(np.sum((predicted.astype("float64") - actual) ** 2))
        count += len(actual)
    return float(np.sqrt(total / count))
