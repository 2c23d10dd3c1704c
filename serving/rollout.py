"""The API's side of a rollout: which version answers a request, and the scores taken off the request path.

Besides the ``champion``, the model store (:mod:`serving.model_store`) loads the version with
alias ``shadow`` and, while the registered model's ``canary_share`` tag is above 0, the
``challenger`` (:func:`read_registry`, one registry call per poll). :class:`Rollout` holds
them as one reference, swapped like the champion.

- **Canary**: :meth:`Rollout.canary_for` sends a request to the challenger when a hash of its
  API key (without one: of its body, so the same record always gets the same version) falls
  in the share. The hash is salted with the challenger's version, so each challenger sees its
  own population, the same one on every worker. The prediction log records ``role`` canary.
- **Off the request path**: :class:`OffPathScorer` takes, after the answer is computed and
  logged, the request's records for the shadow (every request whose answer it did not give)
  and for the champion beside a canary's answer (so the sequential gate of
  :mod:`price_platform.rollout.gate` finds pairs). A thread scores them in batches, in moments
  when no ``/predict`` request is in flight (at most ``quiet_seconds`` late), and writes them to
  ``monitoring.rollout_predictions``. Its queue is bounded: a slow or failing shadow loses its
  own scores (counted in ``offpath_scores_dropped_total`` / ``offpath_score_failures_total``),
  never the champion's answer.
- **Live error**: the same thread sets ``live_rmsle{model_version, role}`` every
  :data:`LIVE_ERROR_SECONDS` from the feedback of the last :data:`LIVE_ERROR_WINDOW` (NaN for a
  serving version without feedback yet).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg2
import psycopg2.extras
from mlflow.exceptions import MlflowException

from price_platform.registry import CHALLENGER, CHAMPION, tracking
from price_platform.rollout import CANARY_SHARE_TAG, SHADOW
from serving import metrics

if TYPE_CHECKING:
    from serving.model_store import LoadedModel

log = logging.getLogger(__name__)

#: ``role`` of an answer given by the champion / by the challenger's canary share, and of a shadow's score.
CHAMPION_ROLE, CANARY_ROLE, SHADOW_ROLE = "champion", "canary", "shadow"
#: Rows the scorer takes per round (one model call per version and round).
BATCH_ROWS = 2000
#: How often the scorer looks at its queue when nobody wakes it.
FLUSH_SECONDS = 0.2
#: Longest wait of the scorer for a moment with no ``/predict`` request in flight.
QUIET_SECONDS = 0.05
#: How often ``live_rmsle`` is recomputed, and over how much feedback (by arrival).
LIVE_ERROR_SECONDS = 30.0
LIVE_ERROR_WINDOW = "1 day"
#: Seconds between two log lines about dropped or failed off-path scores.
REPORT_SECONDS = 10.0
#: The scorer closes its database connection after this long without anything to write.
IDLE_SECONDS = 5.0


@dataclass(frozen=True)
class RegistryRollout:
    """The registry's aliases of one model and the canary share (``None``: alias unset)."""

    champion: str | None
    challenger: str | None
    shadow: str | None
    canary_share: float


def read_registry(tracking_uri: str, model_name: str) -> RegistryRollout:
    """Aliases and canary share in one registry call; all unset when the model is not registered."""
    try:
        model = tracking.client(tracking_uri).get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return RegistryRollout(None, None, None, 0.0)
        raise
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    try:
        share = float((model.tags or {}).get(CANARY_SHARE_TAG, 0.0))
    except ValueError:
        log.error("tag %s of %s is not a number: %r; no canary", CANARY_SHARE_TAG, model_name,
                  model.tags.get(CANARY_SHARE_TAG))
        share = 0.0
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        log.error("tag %s of %s is %r, not a share from 0 to 1; no canary", CANARY_SHARE_TAG, model_name, share)
        share = 0.0
    return RegistryRollout(aliases.get(CHAMPION), aliases.get(CHALLENGER), aliases.get(SHADOW), share)


@dataclass(frozen=True)
class Rollout:
    """The versions serving beside the champion: the shadow, the canary and its share of requests."""

    shadow: LoadedModel | None = None
    canary: LoadedModel | None = None
    share: float = 0.0

    @property
    def active(self) -> bool:
        return self.shadow is not None or self.canary is not None

    def canary_for(self, sticky: bytes) -> LoadedModel | None:
        """The canary when ``sticky`` (the API key's id, else the body) falls in its share; else ``None``."""
        canary = self.canary
        if canary is None or bucket(sticky, canary.version) >= self.share:
            return None
        return canary

    def describe(self) -> dict[str, Any]:
        return {
            "shadow_version": None if self.shadow is None else self.shadow.version,
            "canary_version": None if self.canary is None else self.canary.version,
            "canary_share": self.share if self.canary is not None else 0.0,
        }


NO_ROLLOUT = Rollout()


def bucket(sticky: bytes, salt: str) -> float:
    """Where ``sticky`` falls in [0, 1): the same on every worker and every run, for the same ``salt``."""
    digest = hashlib.blake2b(sticky, digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class OffPathJob:
    """One request's records for one model to score off the request path."""

    model: LoadedModel
    role: str
    prediction_ids: Sequence[uuid.UUID]
    records: Sequence[msgspec.Struct]

    def __len__(self) -> int:
        return len(self.records)


_INSERT = (
    "insert into monitoring.rollout_predictions (prediction_id, model_version, role, prediction, latency_ms)"
    " values %s on conflict (prediction_id, model_version) do nothing"
)
_LIVE_ERROR = f"""
    with recent as (
        select prediction_id, actual from monitoring.actuals
        where received_at > now() - interval '{LIVE_ERROR_WINDOW}' and actual > 0
    ),
    scored as (
        select prediction_id, model_version, role, prediction from monitoring.predictions
        where prediction_id in (select prediction_id from recent)
        union all
        select prediction_id, model_version, role, prediction from monitoring.rollout_predictions
        where prediction_id in (select prediction_id from recent)
    )
    select model_version, role, sqrt(avg(power(ln(recent.actual) - ln(scored.prediction), 2)))
    from scored join recent using (prediction_id)
    where scored.prediction > 0 and scored.prediction < 'Infinity'
    group by model_version, role
"""


class OffPathScorer:
    """A bounded queue of records to score off the request path, and the thread that scores and writes them."""

    def __init__(
        self, dsn: str | None, *, capacity: int, serving: Callable[[], Sequence[tuple[str, str]]] = tuple,
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        """``serving``: the (version, role) pairs serving now, shown in ``live_rmsle`` even before any feedback."""
        self.dsn = dsn
        self.serving = serving
        self.capacity = capacity
        self.quiet_seconds = quiet_seconds
        self.submitted = 0  # rows taken into the queue (only the request side adds)
        self.dropped = 0
        self.failed = 0
        self.written = 0
        self._taken = 0  # rows the thread took out (only the thread changes it)
        self._jobs: deque[OffPathJob] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._quiet = threading.Event()
        self._quiet.set()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_report = 0.0
        self._live_error_due = 0.0
        self._live_versions: set[tuple[str, str]] = set()

    def waiting(self) -> int:
        """Rows in the queue."""
        return self.submitted - self._taken

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Count a ``/predict`` request in flight for as long as this block runs (its answer is sent at the end).

        With a database, the first request starts the thread (it also keeps ``live_rmsle`` up to date).
        """
        if self._thread is None and self.dsn is not None:
            self.start()
        self._in_flight += 1
        if self._in_flight == 1:
            self._quiet.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()

    def submit(self, model: LoadedModel, role: str, prediction_ids: Sequence[uuid.UUID],
               records: Sequence[msgspec.Struct]) -> None:
        """Queue one request's records for ``model``; when the queue is full they are dropped and counted."""
        if self.waiting() + len(records) > self.capacity:
            self._report_drop(role, len(records))
            return
        self._jobs.append(OffPathJob(model, role, prediction_ids, records))
        self.submitted += len(records)
        if self._thread is None:
            self.start()
        elif self.waiting() >= BATCH_ROWS:
            self._wake.set()

    def start(self) -> None:
        """Start the scoring thread (the first submitted request does when nobody did)."""
        with self._start_lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="off-path-scorer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Score and write what is queued (for at most ``timeout`` seconds), then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        connection = None
        busy = time.monotonic()  # when the connection was last used to write
        while True:
            stopping = self._stop.is_set()
            if self.dsn is not None and time.monotonic() >= self._live_error_due:
                connection = self._refresh_live_error(connection)
            if not self._jobs:
                if stopping:
                    break
                if connection is not None and time.monotonic() - busy > IDLE_SECONDS:
                    connection.close()
                    connection = None
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
                continue
            if not stopping:
                self._quiet.wait(self.quiet_seconds)
            jobs = _take(self._jobs, BATCH_ROWS)
            self._taken += sum(map(len, jobs))
            rows = self._score(jobs)
            if rows and self.dsn is not None:
                connection = self._write(connection, rows)
                busy = time.monotonic()
            if not stopping and self.waiting() < BATCH_ROWS:
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
        if connection is not None:
            connection.close()

    def _score(self, jobs: list[OffPathJob]) -> list[tuple[str, str, str, float, float]]:
        """Each model's records of ``jobs`` in one call: table rows.

        When a call fails, that model's requests are scored one by one, so only the requests it
        fails on lose their scores (as the micro-batcher does for answers).
        """
        by_model: dict[tuple[int, str], list[OffPathJob]] = {}
        for job in jobs:
            by_model.setdefault((id(job.model), job.role), []).append(job)
        rows: list[tuple[str, str, str, float, float]] = []
        for group in by_model.values():
            try:
                rows.extend(self._score_together(group))
            except Exception as error:  # noqa: BLE001 (a failing shadow loses its own scores, nothing else)
                if len(group) == 1:
                    self._report_failure(group[0], len(group[0]), error)
                    continue
                for job in group:
                    try:
                        rows.extend(self._score_together([job]))
                    except Exception as alone:  # noqa: BLE001 (this request's records only)
                        self._report_failure(job, len(job), alone)
        return rows

    def _score_together(self, group: list[OffPathJob]) -> list[tuple[str, str, str, float, float]]:
        """Rows of one model's call on every record of ``group`` (prices that are not finite and positive left out)."""
        model, role = group[0].model, group[0].role
        records = [record for job in group for record in job.records]
        started = time.perf_counter()
        prices = model.predict([msgspec.structs.astuple(record) for record in records]).tolist()
        seconds = time.perf_counter() - started
        metrics.model_latency(model.version, role).observe(seconds)
        milliseconds = seconds * 1000
        ids = [prediction_id for job in group for prediction_id in job.prediction_ids]
        priced = [(str(i), model.version, role, p, milliseconds)
                  for i, p in zip(ids, prices, strict=True) if math.isfinite(p) and p > 0]
        if len(priced) < len(records):
            self._report_failure(group[0], len(records) - len(priced), ValueError("no finite positive price"))
        return priced

    def _write(self, connection: Any, rows: list[tuple[str, str, str, float, float]]) -> Any:
        """Insert the rows; on a database error they are dropped (off-path scores are not retried)."""
        try:
            if connection is None or connection.closed:
                connection = psycopg2.connect(self.dsn, connect_timeout=3)
            with connection, connection.cursor() as cursor:
                psycopg2.extras.execute_values(cursor, _INSERT, rows, page_size=len(rows))
            self.written += len(rows)
            metrics.OFFPATH_WRITTEN.inc(len(rows))
        except psycopg2.Error as error:
            for role in {row[2] for row in rows}:
                self._report_drop(role, sum(1 for row in rows if row[2] == role), str(error).strip())
            if connection is not None:
                connection.close()
            connection = None
        return connection

    def _refresh_live_error(self, connection: Any) -> Any:
        """Set ``live_rmsle`` per version and role from recent feedback; NaN for serving versions without any."""
        self._live_error_due = time.monotonic() + LIVE_ERROR_SECONDS
        try:
            if connection is None or connection.closed:
                connection = psycopg2.connect(self.dsn, connect_timeout=3)
            with connection, connection.cursor() as cursor:
                cursor.execute(_LIVE_ERROR)
                found = {(version, role): float(value) for version, role, value in cursor.fetchall()}
        except psycopg2.Error as error:
            log.warning("cannot compute the live error per version: %s", str(error).strip())
            if connection is not None:
                connection.close()
            return None
        serving = set(self.serving())
        for version, role in set(found) | serving | self._live_versions:
            metrics.LIVE_RMSLE.labels(model_version=version, role=role).set(found.get((version, role), math.nan))
        self._live_versions = set(found) | serving
        return connection

    def _report_drop(self, role: str, count: int, why: str = "the queue is full") -> None:
        self.dropped += count
        metrics.OFFPATH_DROPPED.labels(role=role).inc(count)
        self._report(f"{count} off-path {role} scores dropped ({why}); {self.dropped} so far")

    def _report_failure(self, job: OffPathJob, count: int, error: Exception) -> None:
        self.failed += count
        version, role = job.model.version, job.role
        metrics.OFFPATH_FAILURES.labels(model_version=version, role=role).inc(count)
        self._report(f"version {version} ({role}) failed to score {count} records off the request path: {error!r}")

    def _report(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_report > REPORT_SECONDS:
            self._last_report = now
            log.error(message)


def _take(queue: deque[OffPathJob], rows: int) -> list[OffPathJob]:
    """Jobs from the head of ``queue`` until they hold at least ``rows`` records (or it is empty)."""
    taken, held = [], 0
    while queue and held < rows:
        job = queue.popleft()
        taken.append(job)
        held += len(job)
    return taken
