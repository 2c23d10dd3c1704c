"""Prediction and feedback logs, written to PostgreSQL in batches by a thread, off the request path.

A request only appends its answered records, as they are (one :class:`LoggedPredictions`
per request, whatever its size), to a bounded in-memory buffer; turning them into table rows
(ids as text, features as JSON) is the writer thread's work. The writer takes about
``BATCH_ROWS`` rows at a time and sends them with one ``COPY``, in moments when no request is
in flight (:meth:`PredictionLog.handling`): as soon as the last request in flight is answered
with ``QUIET_ROWS`` rows waiting, and otherwise every ``FLUSH_SECONDS`` or ``BATCH_ROWS`` rows,
after waiting at most ``quiet_seconds`` for such a moment. Its work (and PostgreSQL's) then does not
compete with answers for the interpreter lock and the cores. When PostgreSQL does not
answer, the writer spills (:mod:`serving.prediction_spill`): each batch goes, fsynced, to this
process's append-only file in ``spill_dir`` instead, as do batches taken while more than
``spill_rows`` rows wait in memory; it tries PostgreSQL again with a growing pause. When
PostgreSQL answers (and when the writer starts, and every ``RESCAN_SECONDS``) it replays the
spill files no live process holds, its own first, with ``insert ... on conflict do nothing`` (a
replay that is cut short and done again writes no row twice) and deletes each file once its
rows are committed. On SIGTERM during an outage the buffer goes to the spill file at once; a
crash loses only the rows taken since the last spill (at most ``FLUSH_SECONDS`` of them). Without
a ``spill_dir`` the batch goes back to the head of the buffer and waits for the database instead.
Rows that arrive while the buffer is full are dropped, counted in ``prediction_logs_dropped_total``
and reported in a log line.
Features are stored as JSON text (a ``json`` column), with the data set's ``pii`` columns
replaced by their HMAC-SHA-256 under a secret key (:func:`pii_key`): a bare hash of a name or
an e-mail address is reversed by hashing the candidates, a keyed one is not without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, repeat
from pathlib import Path

import msgspec
import psycopg2
import psycopg2.errors
import psycopg2.extras

from price_platform.settings import Settings
from serving import metrics
from serving.prediction_spill import Claim, SpillWriter, claim_files

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
FLUSH_SECONDS = 0.2
MAX_PAUSE_SECONDS = 2.0
#: Longest wait of the writer for a moment with no request in flight before it writes anyway.
QUIET_SECONDS = 0.05
#: Rows that make a moment with no request in flight worth a write of their own; fewer wait for
#: the writer's next round (each COPY is a commit: under a load of single records, quiet moments
#: come many times a second with a few rows each).
QUIET_ROWS = 500
#: How often the writer looks for spill files left by other processes (a crashed worker, a replica gone).
RESCAN_SECONDS = 60.0

_COLUMNS = (
    "prediction_id, prediction, lower_bound, upper_bound, capped, features, created_at, model_version, latency_ms, key_id,"
    " role"
)
#: The rows go as COPY text made by :meth:`PredictionLog._copy_text`: PostgreSQL parses no SQL per
#: row, and each request's features are encoded by msgspec in one call.
_COPY_PREDICTIONS = f"copy monitoring.predictions ({_COLUMNS}) from stdin"
#: COPY fails on a row the table already holds, which happens when a write is retried after a
#: commit whose answer was lost; those rows then go through this statement, which skips them.
_INSERT_PREDICTIONS = (
    f"insert into monitoring.predictions ({_COLUMNS})"
    " select (r->>0)::uuid, (r->>1)::float8, (r->>2)::float8, (r->>3)::float8, (r->>4)::boolean, (r->5)::json,"
    " (r->>6)::timestamptz, r->>7, (r->>8)::float8, r->>9, r->>10 from jsonb_array_elements(%s::jsonb) as r on conflict do nothing"
)
_ENCODER = msgspec.json.Encoder()
_INSERT_ACTUALS = (
    "insert into monitoring.actuals (prediction_id, actual) values %s"
    " on conflict (prediction_id) do update set actual = excluded.actual, received_at = now()"
)


class _SpilledBatch(msgspec.Struct):
    """One record of a spill file: prediction rows as :data:`_INSERT_PREDICTIONS` takes them, and feedback rows."""

    predictions: msgspec.Raw
    actuals: list[tuple[uuid.UUID, float]]


@dataclass(frozen=True, slots=True)
class LoggedPredictions:
    """The records one request had priced, as they will be written to ``monitoring.predictions``."""

    prediction_ids: Sequence[uuid.UUID]
    created_at: datetime
    model_version: str
    records: Sequence[msgspec.Struct]
    predictions: Sequence[float]
    lower: Sequence[float]
    upper: Sequence[float]
    latency_ms: float
    key_id: str | None
    capped: Sequence[bool] = ()  # per record: the price is the edge of the model's price band (none when empty)
    role: str = "champion"  # who answered: the champion, or the challenger's canary share ("canary")

    def __len__(self) -> int:
        return len(self.records)

    def head(self, count: int) -> LoggedPredictions:
        """The first ``count`` records only."""
        return LoggedPredictions(
            self.prediction_ids[:count], self.created_at, self.model_version, self.records[:count],
            self.predictions[:count], self.lower[:count], self.upper[:count], self.latency_ms, self.key_id,
            self.capped[:count], self.role,
        )


class PredictionLog:
    """A bounded buffer of prediction and feedback rows and the thread that writes them."""

    def __init__(
        self, dsn: str | None, *, capacity: int, pii: Sequence[str] = (), pii_key: bytes | None = None,
        quiet_seconds: float = QUIET_SECONDS, spill_dir: Path | None = None, spill_rows: int | None = None,
    ) -> None:
        """``pii_key``: the HMAC key of the ``pii`` columns (unset: a random one, so hashes match within this log only).

        ``spill_dir``: folder of the spill files (unset: rows wait in memory while PostgreSQL is away);
        ``spill_rows``: rows waiting in memory above which batches are spilled even while PostgreSQL
        answers (default: ``capacity``).
        """
        self.dsn = dsn
        self.pii_key = pii_key or secrets.token_bytes(32)
        self.capacity = capacity
        self.quiet_seconds = quiet_seconds
        self.pii = frozenset(pii)
        self.accepted = 0  # rows taken into the buffer (only the request side adds)
        self.dropped = 0
        self.written = 0
        self.spilled = 0  # rows written to spill files
        self.replayed = 0  # rows of spill files written to PostgreSQL (rows it already had not counted)
        self.spill_dir = spill_dir
        self.spill_rows = capacity if spill_rows is None else spill_rows
        self._spill = SpillWriter(spill_dir) if spill_dir is not None else None
        self._spill_lock = threading.Lock()  # the writer, and stop() if the writer is stuck, append
        self._connection = None  # the writer's (only the writer thread uses it)
        self._outage = False  # PostgreSQL did not answer: batches go to the spill file
        self._pause = FLUSH_SECONDS
        self._next_probe = 0.0
        self._next_rescan = 0.0
        self._taken = 0  # rows the writer took out of the buffer (only the writer changes it)
        self._predictions: deque[LoggedPredictions] = deque()
        self._actuals: deque[tuple[uuid.UUID, float]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight = 0  # requests being handled (only the event loop changes it)
        self._quiet = threading.Event()
        self._quiet.set()
        self._thread: threading.Thread | None = None
        self._last_drop_report = 0.0
        self._deadline = float("inf")

    def __len__(self) -> int:
        return self._waiting() + len(self._actuals)

    def _waiting(self) -> int:
        """Prediction rows in the buffer."""
        return self.accepted - self._taken

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Count a request in flight for as long as this block runs; the last one out may wake the writer."""
        self._in_flight += 1
        if self._in_flight == 1:
            self._quiet.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()
                if self._waiting() >= QUIET_ROWS:
                    self._wake.set()

    def add(self, batch: LoggedPredictions) -> None:
        """Queue one request's records; those beyond the buffer's capacity are dropped and counted."""
        room = self.capacity - self._waiting()
        if room < len(batch):
            self._drop(len(batch) - max(room, 0))
            if room <= 0:
                return
            batch = batch.head(room)
        self._predictions.append(batch)
        self.accepted += len(batch)
        if self._waiting() >= BATCH_ROWS:
            self._wake.set()

    def add_actual(self, prediction_id: uuid.UUID, actual: float) -> bool:
        """Queue a feedback row; False when the buffer is full."""
        if len(self._actuals) >= self.capacity:
            self._drop(1)
            return False
        self._actuals.append((prediction_id, actual))
        return True

    def start(self) -> None:
        if self.dsn is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Write what is buffered (for at most ``timeout`` seconds; spilled at once while PostgreSQL is away), then stop."""
        if self._thread is None:
            return
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 5.0)
        if self._thread.is_alive() and self._spill is not None:  # stuck on a dead connection: spill from here
            log.error("prediction log writer did not finish in %.0f s: spilling what it left", timeout)
            while len(self) and self._spill_batch(_take(self._predictions, BATCH_ROWS), _take(self._actuals, BATCH_ROWS)):
                pass
        self._thread = None
        left = len(self)
        if left:
            self._drop(left)
            log.error("stopped with %d prediction log rows unwritten (PostgreSQL unreachable)", left)

    def _drop(self, count: int) -> None:
        self.dropped += count
        metrics.LOGS_DROPPED.inc(count)
        now = time.monotonic()
        if now - self._last_drop_report > 10.0:
            self._last_drop_report = now
            log.error("prediction log buffer full (%d rows): %d rows dropped so far", self.capacity, self.dropped)

    def _run(self) -> None:
        if self._spill is not None:
            self._catch_up()
        while True:
            stopping = self._stop.is_set()
            if self._spill is not None:
                if self._outage:
                    if time.monotonic() >= self._next_probe:
                        self._probe(replay=not stopping)
                elif not stopping and self._replay_due():
                    self._catch_up()
            if not len(self):
                if stopping:
                    break
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
                continue
            if not stopping:
                self._quiet.wait(self.quiet_seconds)
            spill = self._spill is not None and (self._outage or self._waiting() > self.spill_rows)
            predictions = _take(self._predictions, BATCH_ROWS)
            self._taken += sum(map(len, predictions))
            actuals = _take(self._actuals, BATCH_ROWS)
            if spill:
                if not self._spill_batch(predictions, actuals) and self._retry_later(stopping):
                    break
            else:
                try:
                    self._write(self._connect(), predictions, actuals)
                    self._pause = FLUSH_SECONDS
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                    self._disconnect()
                    if self._spill is not None:
                        self._lost(error)
                        if not self._spill_batch(predictions, actuals) and self._retry_later(stopping):
                            break
                    else:
                        self._keep(predictions, actuals)
                        log.warning("cannot write %d prediction log rows yet: %s", len(self), str(error).strip())
                        if self._retry_later(stopping):
                            break
                except psycopg2.Error as error:  # the rows themselves are refused: retrying cannot help
                    refused = sum(map(len, predictions)) + len(actuals)
                    self._drop(refused)
                    log.error("dropped %d log rows PostgreSQL refuses: %s", refused, str(error).strip())
            metrics.LOG_BUFFER.set(len(self))
            if not stopping and self._waiting() < BATCH_ROWS:
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
        self._disconnect()
        if self._spill is not None:
            self._spill.close()

    def _connect(self):
        """The writer's connection to PostgreSQL, opened when needed."""
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self.dsn, connect_timeout=3)
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def _keep(self, predictions: list[LoggedPredictions], actuals: list[tuple[uuid.UUID, float]]) -> None:
        """Put rows the writer took back at the head of the buffer."""
        self._predictions.extendleft(reversed(predictions))
        self._taken -= sum(map(len, predictions))
        self._actuals.extendleft(reversed(actuals))

    def _retry_later(self, stopping: bool) -> bool:
        """Pause before the next attempt, growing; True when stopping and out of time (the rows are then dropped)."""
        if stopping and time.monotonic() > self._deadline:
            return True
        time.sleep(self._pause)
        self._pause = min(self._pause * 2, MAX_PAUSE_SECONDS)
        return False

    def _lost(self, error: Exception) -> None:
        """PostgreSQL stopped answering: spill until a probe reaches it again."""
        if not self._outage:
            log.warning(
                "PostgreSQL unreachable (%s): prediction log rows go to the spill file in %s until it answers",
                str(error).strip(), self.spill_dir,
            )
        self._outage = True
        self._next_probe = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, MAX_PAUSE_SECONDS)

    def _probe(self, *, replay: bool) -> None:
        """Try PostgreSQL again during an outage; when it answers, replay the spill files (unless ``replay`` is False)."""
        try:
            self._connect()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            self._lost(error)
            return
        self._outage = False
        self._pause = FLUSH_SECONDS
        log.info("PostgreSQL answers again: %d prediction log rows were spilled so far", self.spilled)
        if replay:
            self._catch_up()

    def _replay_due(self) -> bool:
        """Whether to replay now: this writer's own spill file while the buffer is below ``spill_rows``, or a rescan."""
        own = self._spill is not None and self._spill.path is not None and self._waiting() <= self.spill_rows
        return own or time.monotonic() >= self._next_rescan

    def _catch_up(self) -> None:
        """Replay this writer's spill file, then every spill file no other process holds; on an outage, stop."""
        assert self._spill is not None and self.spill_dir is not None
        self._next_rescan = time.monotonic() + RESCAN_SECONDS
        own = self._spill.seal()
        claims: Iterable[Claim] = chain([own] if own else [], claim_files(self.spill_dir))
        try:
            connection = self._connect()
            for claim in claims:
                self._replay(connection, claim)
                if self._stop.is_set():
                    break
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            self._disconnect()
            self._lost(error)
        finally:
            if own is not None:  # not replayed (an outage, a stop): another replay takes it up
                own.release()

    def _replay(self, connection, claim: Claim) -> None:
        """Write one spill file's rows (skipping those the table holds), then delete it; released as it is if cut short."""
        rows = 0
        try:
            for payload in claim.records():
                if self._stop.is_set():  # shutting down: the next start replays the rest, skipping what is written
                    claim.release()
                    return
                try:
                    batch = msgspec.json.decode(payload, type=_SpilledBatch)
                    with connection, connection.cursor() as cursor:
                        cursor.execute(_INSERT_PREDICTIONS, (bytes(batch.predictions).decode(),))
                        inserted = cursor.rowcount
                        if batch.actuals:
                            latest = {str(pid): actual for pid, actual in batch.actuals}
                            psycopg2.extras.execute_values(cursor, _INSERT_ACTUALS, list(latest.items()), page_size=len(latest))
                except (msgspec.DecodeError, msgspec.ValidationError) as error:
                    claim.bad.append(f"unreadable batch: {error}")
                    continue
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    raise
                except psycopg2.Error as error:  # PostgreSQL refuses these rows: keep them in the file, say so
                    claim.bad.append(f"batch PostgreSQL refuses: {str(error).strip()}")
                    continue
                rows += inserted
                self.replayed += inserted
                self.written += inserted
                metrics.LOGS_WRITTEN.inc(inserted)
        except BaseException:
            claim.release()
            raise
        claim.finish()
        log.info("replayed %d prediction log rows from %s", rows, claim.path)

    def _spill_batch(self, predictions: list[LoggedPredictions], actuals: list[tuple[uuid.UUID, float]]) -> bool:
        """Append the rows to this process's spill file (fsynced); False, with the rows back in the buffer, if the disk refuses."""
        assert self._spill is not None
        rows = [row for batch in predictions for row in self._rows(batch)]
        payload = _ENCODER.encode({"predictions": rows, "actuals": actuals})
        try:
            with self._spill_lock:
                self._spill.append(payload)
        except OSError as error:
            self._keep(predictions, actuals)
            log.error("cannot write the spill file in %s (%s): %d rows wait in memory", self.spill_dir, error, len(self))
            return False
        self.spilled += len(rows) + len(actuals)
        return True

    def _write(self, connection, predictions: list[LoggedPredictions], actuals: list[tuple[uuid.UUID, float]]) -> None:
        if predictions:
            try:
                with connection, connection.cursor() as cursor:
                    cursor.copy_expert(_COPY_PREDICTIONS, io.BytesIO(b"".join(map(self._copy_text, predictions))))
            except psycopg2.errors.UniqueViolation:
                rows = [row for batch in predictions for row in self._rows(batch)]
                with connection, connection.cursor() as cursor:
                    cursor.execute(_INSERT_PREDICTIONS, (msgspec.json.encode(rows).decode(),))
        if actuals:
            latest = {str(pid): actual for pid, actual in actuals}  # one row per id: the last report wins
            with connection, connection.cursor() as cursor:
                psycopg2.extras.execute_values(cursor, _INSERT_ACTUALS, list(latest.items()), page_size=len(latest))
        written = sum(map(len, predictions))
        self.written += written
        metrics.LOGS_WRITTEN.inc(written)

    def _copy_text(self, batch: LoggedPredictions) -> bytes:
        """One request's records as lines of COPY's text format, in the column order of ``_COLUMNS``.

        msgspec writes the per-record values (as JSON arrays of an id and three numbers, which
        become tab-separated by deleting ``[]"`` and turning commas into tabs) and the features
        (one JSON object a line, backslashes doubled for COPY), one call each; the lines are
        joined in C. No per-record Python formatting: this thread shares the interpreter lock
        with the requests.
        """
        heads = _ENCODER.encode_lines(
            zip(batch.prediction_ids, batch.predictions, batch.lower, batch.upper, _capped(batch), strict=True)
        )
        heads = heads.translate(None, b'[]"').replace(b",", b"\t").split(b"\n")
        features = _ENCODER.encode_lines(self._features(batch))
        if b"\\" in features:  # only strings with escapes have one
            features = features.replace(b"\\", b"\\\\")
        features = features.split(b"\n")
        tail = "\t".join(
            [batch.created_at.isoformat(), _copy_field(batch.model_version), repr(batch.latency_ms), _copy_field(batch.key_id),
             batch.role]
        ).encode()
        return b"\n".join(map(b"\t".join, zip(heads[:-1], features[:-1], repeat(tail)))) + b"\n"

    def _rows(self, batch: LoggedPredictions) -> Iterable[tuple]:
        """Table rows of one request's records, in the column order of ``_COLUMNS``."""
        created, version, latency, key_id, role = (
            batch.created_at, batch.model_version, batch.latency_ms, batch.key_id, batch.role
        )
        for prediction_id, prediction, lower, upper, capped, record in zip(
            batch.prediction_ids, batch.predictions, batch.lower, batch.upper, _capped(batch), self._features(batch), strict=True
        ):
            yield prediction_id, prediction, lower, upper, capped, record, created, version, latency, key_id, role

    def _features(self, batch: LoggedPredictions) -> Sequence[msgspec.Struct | dict]:
        """The records as they are stored: with the ``pii`` columns hashed."""
        return batch.records if not self.pii else [self._hashed(record) for record in batch.records]

    def _hashed(self, record: msgspec.Struct) -> dict:
        features = msgspec.structs.asdict(record)
        for name in self.pii & features.keys():
            if features[name] is not None:
                features[name] = hmac.new(self.pii_key, str(features[name]).encode(), hashlib.sha256).hexdigest()
        return features


def _capped(batch: LoggedPredictions) -> Sequence[bool]:
    """Per record, whether its price was capped (all False when the request gave no flags)."""
    return batch.capped or [False] * len(batch)


def pii_key(settings: Settings) -> bytes:
    """The HMAC key of logged ``pii`` values: ``settings.pii_hmac_key``, else one made once and kept in ``<home>/pii_hmac.key``.

    The file is created with mode 0600 and exclusively, so workers starting together agree on one key.
    """
    if settings.pii_hmac_key:
        return settings.pii_hmac_key.encode()
    path = Path(settings.home) / PII_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    for _ in range(50):  # another worker may be writing it this instant
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty: delete it or set PRICE_PLATFORM_PII_HMAC_KEY")


#: File under ``settings.home`` holding the generated HMAC key of ``pii`` values.
PII_KEY_FILE = "pii_hmac.key"


def _copy_field(value: str | None) -> str:
    """A text value in COPY's text format (``\\N`` for NULL)."""
    if value is None:
        return "\\N"
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _take(buffer: deque, rows: int) -> list:
    """Items from the head of ``buffer`` until they hold at least ``rows`` rows (or it is empty)."""
    taken, held = [], 0
    while buffer and held < rows:
        item = buffer.popleft()
        taken.append(item)
        held += len(item) if isinstance(item, LoggedPredictions) else 1
    return taken
