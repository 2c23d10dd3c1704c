"""Prediction and feedback logs, written to PostgreSQL in batches by a thread, off the request path.

A request only appends to a bounded in-memory buffer. The writer thread takes up to
``BATCH_ROWS`` rows at a time and inserts them in one statement; when PostgreSQL does not
answer, the batch goes back to the head of the buffer and the writer retries with a growing
pause, so the rows wait until the database returns. Rows that arrive while the buffer is full
are dropped, counted in ``prediction_logs_dropped_total`` and reported in a log line.
Features are stored as JSON, with the data set's ``pii`` columns replaced by a SHA-256 hash.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import psycopg2
import psycopg2.extras

from serving import metrics

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
FLUSH_SECONDS = 0.2
MAX_PAUSE_SECONDS = 2.0

_INSERT_PREDICTIONS = (
    "insert into monitoring.predictions (prediction_id, created_at, model_version, features, prediction,"
    " lower_bound, upper_bound, latency_ms, key_id) values %s on conflict do nothing"
)
_INSERT_ACTUALS = (
    "insert into monitoring.actuals (prediction_id, actual) values %s"
    " on conflict (prediction_id) do update set actual = excluded.actual, received_at = now()"
)


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    """One answered record, as it will be written to ``monitoring.predictions``."""

    prediction_id: uuid.UUID
    created_at: datetime
    model_version: str
    record: msgspec.Struct
    prediction: float
    lower: float
    upper: float
    latency_ms: float
    key_id: str | None


class PredictionLog:
    """A bounded buffer of prediction and feedback rows and the thread that writes them."""

    def __init__(self, dsn: str | None, *, capacity: int, pii: Sequence[str] = ()) -> None:
        self.dsn = dsn
        self.capacity = capacity
        self.pii = frozenset(pii)
        self.accepted = 0
        self.dropped = 0
        self.written = 0
        self._predictions: deque[LoggedPrediction] = deque()
        self._actuals: deque[tuple[uuid.UUID, float]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_report = 0.0
        self._deadline = float("inf")

    def __len__(self) -> int:
        return len(self._predictions) + len(self._actuals)

    def add(self, rows: Iterable[LoggedPrediction]) -> None:
        """Queue rows for writing; rows beyond the buffer's capacity are dropped and counted."""
        for row in rows:
            if len(self._predictions) >= self.capacity:
                self._drop(1)
                continue
            self._predictions.append(row)
            self.accepted += 1
        if len(self._predictions) >= BATCH_ROWS:
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
        """Write what is buffered (for at most ``timeout`` seconds), then stop the writer."""
        if self._thread is None:
            return
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 5.0)
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
        connection = None
        pause = FLUSH_SECONDS
        while True:
            stopping = self._stop.is_set()
            if not len(self):
                if stopping:
                    break
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
                continue
            predictions = _take(self._predictions, BATCH_ROWS)
            actuals = _take(self._actuals, BATCH_ROWS)
            try:
                if connection is None or connection.closed:
                    connection = psycopg2.connect(self.dsn, connect_timeout=3)
                self._write(connection, predictions, actuals)
                pause = FLUSH_SECONDS
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                self._predictions.extendleft(reversed(predictions))
                self._actuals.extendleft(reversed(actuals))
                if connection is not None:
                    connection.close()
                connection = None
                log.warning("cannot write %d prediction log rows yet: %s", len(self), str(error).strip())
                if stopping and time.monotonic() > self._deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)
            except psycopg2.Error as error:  # the rows themselves are refused: retrying cannot help
                self._drop(len(predictions) + len(actuals))
                log.error("dropped %d log rows PostgreSQL refuses: %s", len(predictions) + len(actuals), str(error).strip())
            metrics.LOG_BUFFER.set(len(self))
            if not stopping and len(self._predictions) < BATCH_ROWS:
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
        if connection is not None:
            connection.close()

    def _write(self, connection, predictions: list[LoggedPrediction], actuals: list[tuple[uuid.UUID, float]]) -> None:
        with connection, connection.cursor() as cursor:
            if predictions:
                psycopg2.extras.execute_values(
                    cursor, _INSERT_PREDICTIONS, [self._row(row) for row in predictions], page_size=len(predictions)
                )
            if actuals:
                latest = {str(pid): actual for pid, actual in actuals}  # one row per id: the last report wins
                psycopg2.extras.execute_values(cursor, _INSERT_ACTUALS, list(latest.items()), page_size=len(latest))
        self.written += len(predictions)
        metrics.LOGS_WRITTEN.inc(len(predictions))

    def _row(self, row: LoggedPrediction) -> tuple:
        features = msgspec.structs.asdict(row.record)
        for name in self.pii & features.keys():
            if features[name] is not None:
                features[name] = hashlib.sha256(str(features[name]).encode()).hexdigest()
        return (
            str(row.prediction_id), row.created_at, row.model_version, msgspec.json.encode(features).decode(),
            row.prediction, row.lower, row.upper, row.latency_ms, row.key_id,
        )


def _take(buffer: deque, count: int) -> list:
    taken = []
    while buffer and len(taken) < count:
        taken.append(buffer.popleft())
    return taken
