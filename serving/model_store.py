"""The model the server answers with: loaded from ``models:/<name>@champion``, warmed, swapped as one reference.

A new version is loaded, compiled, warmed and smoke-tested in a worker thread, off the
request path; only when all of that passed does :attr:`ModelStore.current` point at it
(one attribute assignment, so a request sees either the old or the new model, never a
mix). A version that fails any step is refused, counted in ``model_load_events_total`` and
the old one keeps serving. Before anything is deserialised, the downloaded artifact must be in
the platform's format and match the SHA-256 digests recorded at registration
(:func:`~price_platform.registry.champion.load_version` with the platform database); a version
that fails this is also counted in ``model_artifact_refusals_total``, written to the audit log
and reported by ``/model-info`` (:attr:`ModelStore.artifact_refusals`). Promotions are noticed
through a Redis notification on :func:`promotion_channel` when Redis is configured, and by
polling the alias as the floor.

Each look at the registry also follows the rollout (:mod:`serving.rollout`): the version with
alias ``shadow``, and the ``challenger`` while its canary share is above 0, are loaded the same
way into :attr:`ModelStore.rollout` (one reference, swapped whole). One that fails to load, or
whose alias goes away (its version deleted from the registry), is simply not there: the
champion answers for it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
import numpy as np
import pandas as pd
from prometheus_client import Counter

from price_platform.datasets import DatasetSpec
from price_platform.registry import integrity, tracking
from price_platform.registry.announce import promotion_channel
from price_platform.registry.artifact_format import UnsafeArtifactError
from price_platform.registry.champion import ARTIFACT_ERRORS, load_version
from price_platform.settings import Settings
from serving import metrics
from serving.fast_path import CompiledPipeline, NotCompilable, PipelinePredictor, Predictor, compile_pipeline
from serving.rollout import CANARY_ROLE, CHAMPION_ROLE, NO_ROLLOUT, SHADOW_ROLE, RegistryRollout, Rollout, read_registry

log = logging.getLogger(__name__)

#: How far the compiled path may differ from ``pipeline.predict`` (relative) before it is not used.
AGREEMENT = 1e-6
WARM_ROWS = 64
#: Net new container objects between two collections of the young generation (CPython: 700).
#: A 1,000-record batch holds a few thousand (record tuples, ids, answer lists) for a few
#: milliseconds; at 700 the collector ran about three times within each such request, walked
#: them and promoted them, so that the older generations' collections walked them again (full
#: ones took 40-115 ms, 18 of them by the end of 15 seconds of single-record load). With 50,000
#: a request's objects are freed by reference counting before a collection comes: measured
#: here, no collection during batches (0.8 ms each before), and under single-record load 10%
#: more requests a second and a p99 of 24 ms instead of 45 ms. Only cyclic garbage waits longer.
YOUNG_COLLECTION_THRESHOLD = 50_000
#: A refused version is tried again (when the alias still points to it) after this long.
RETRY_REFUSED_SECONDS = 30.0
#: Artifact refusals :attr:`ModelStore.artifact_refusals` keeps for ``/model-info`` (newest last).
KEPT_REFUSALS = 10

ARTIFACT_REFUSALS = Counter(
    "model_artifact_refusals_total",
    "Model versions refused before loading: artifact files not matching their registration digests"
    " (reason=integrity) or not in the platform's no-pickle format (reason=format).",
    ["reason"],
)
for _reason in ("integrity", "format"):  # exported at 0 from the start, so the first refusal is an increase
    ARTIFACT_REFUSALS.labels(reason=_reason)


class ModelRefused(RuntimeError):
    """A registered version that could not be loaded, warmed or smoke-tested; the old one serves on."""


@dataclass(frozen=True)
class ArtifactRefusal:
    """A version refused because its artifact failed its integrity or format check."""

    version: str
    reason: str  # "integrity" or "format"
    detail: str
    at: str


@dataclass(frozen=True)
class LoadedModel:
    """One warmed registry version and what the API reports about it."""

    name: str
    version: str
    predictor: Predictor
    pipeline: Any
    interval_log_halfwidth: float
    metrics: dict[str, float]
    data_version: str
    run_id: str
    loaded_at: str

    def predict(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        return self.predictor.predict(rows)

    @property
    def explainable(self) -> CompiledPipeline | None:
        return self.predictor if isinstance(self.predictor, CompiledPipeline) else None


def warm_rows(spec: DatasetSpec, record_type: type[msgspec.Struct]) -> list[tuple[Any, ...]]:
    """Plausible records made from the data set description, to warm and smoke-test a model."""
    values: dict[str, Any] = {}
    for name, column in spec.numeric.items():
        low = column.min if column.min is not None else 0.0
        high = column.max if column.max is not None else low + 1.0
        middle = low + (high - low) / 4
        values[name] = round(middle) if column.integer else middle
    for name, column in spec.categorical.items():
        values[name] = column.allowed[0] if column.allowed else "unknown"
    record = msgspec.convert(values, record_type)
    base = msgspec.structs.astuple(record)
    rows = [base]
    for index, name in enumerate(spec.features[: len(spec.numeric)]):
        column = spec.numeric[name]
        if column.min is not None and column.max is not None:
            row = list(base)
            value = column.min + (column.max - column.min) * 0.1
            row[index] = round(value) if column.integer else value
            rows.append(tuple(row))
    return (rows * (WARM_ROWS // len(rows) + 1))[:WARM_ROWS]


def example_rows(
    example: pd.DataFrame | None, spec: DatasetSpec, record_type: type[msgspec.Struct]
) -> list[tuple[Any, ...]]:
    """The version's own logged input example as request rows (real records: the best smoke test).

    Empty when the version has no example or it does not fit the request schema.
    """
    if example is None or not set(spec.features) <= set(example.columns):
        return []
    frame = example[list(spec.features)].astype(object).where(example[list(spec.features)].notna(), None)
    try:
        records = [msgspec.convert(row, record_type, strict=False) for row in frame.to_dict("records")]
    except msgspec.ValidationError as error:
        log.warning("the model's input example does not fit the request schema (%s); smoke-testing made-up rows", error)
        return []
    rows = [msgspec.structs.astuple(record) for record in records]
    return (rows * (WARM_ROWS // len(rows) + 1))[:WARM_ROWS] if rows else []


def prepare(
    name: str, version: str, *, loaded: Any, spec: DatasetSpec, rows: list[tuple[Any, ...]], threads: int
) -> LoadedModel:
    """Compile (or fall back to the pipeline), warm and smoke-test one loaded version."""
    pipeline = loaded.pipeline
    if not math.isfinite(loaded.interval_log_halfwidth) or loaded.interval_log_halfwidth < 0:
        raise ModelRefused(f"version {version}: interval_log_halfwidth {loaded.interval_log_halfwidth} is not usable")
    reference = PipelinePredictor(pipeline, list(spec.features)).predict(rows)
    if not np.all(np.isfinite(reference)) or not np.all(reference > spec.target_min):
        raise ModelRefused(f"version {version}: smoke predictions are not finite prices above {spec.target_min}")
    predictor: Predictor
    try:
        predictor = compile_pipeline(pipeline, spec.features, threads=threads)
        fast = predictor.predict(rows)
        worst = float(np.max(np.abs(fast - reference) / np.abs(reference)))
        if worst >= AGREEMENT:
            log.warning("version %s: compiled path differs from the pipeline by %.3g; serving the pipeline", version, worst)
            predictor = PipelinePredictor(pipeline, list(spec.features))
    except NotCompilable as error:
        log.info("version %s is served by its pipeline: %s", version, error)
        predictor = PipelinePredictor(pipeline, list(spec.features))
    for size in (1, 1, 8, len(rows)):
        predictor.predict(rows[:size])
    return LoadedModel(
        name=name,
        version=version,
        predictor=predictor,
        pipeline=pipeline,
        interval_log_halfwidth=float(loaded.interval_log_halfwidth),
        metrics={key: float(value) for key, value in loaded.metrics.items()},
        data_version=loaded.data_version,
        run_id=loaded.run_id,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _settle_heap() -> None:
    """Before the first model serves: one full collection, exempt everything alive, collect less often.

    A full collection walks every tracked object (modules, the model, the frameworks: hundreds of
    thousands); frozen, they are no longer walked, so the collections that requests trigger stay
    short and do not show up as latency spikes. Frozen objects are still freed when unreferenced.
    Only at start-up: later, a full collection would hold the interpreter for as long again while
    requests wait (and later models add few objects to walk). Then the young generation's
    threshold goes up to :data:`YOUNG_COLLECTION_THRESHOLD`.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


@dataclass
class ModelStore:
    """Holds the serving model and replaces it when the ``champion`` alias moves."""

    settings: Settings
    spec: DatasetSpec
    record_type: type[msgspec.Struct]
    dsn: str | None = None  # the platform database: artifact digests and the audit log
    current: LoadedModel | None = None
    artifact_refusals: Any = field(default_factory=list)  # list[ArtifactRefusal] (Any: Litestar inspects these types)
    rollout: Any = None  # serving.rollout.Rollout: the shadow and the canary beside the champion
    registry_error: str | None = None  # why the last read of the registry failed (None: it answered)
    _lock: Any = field(default_factory=threading.Lock)  # (not `threading.Lock`: Litestar inspects these types)
    _rows: list[tuple[Any, ...]] = field(default_factory=list)
    _refused: dict[str, float] = field(default_factory=dict)  # version -> when it may be tried again

    def __post_init__(self) -> None:
        self._rows = warm_rows(self.spec, self.record_type)
        if self.rollout is None:
            self.rollout = NO_ROLLOUT

    def serving_roles(self) -> list[tuple[str, str]]:
        """(version, role) of every version serving now: the champion, the canary, the shadow."""
        champion, rollout = self.current, self.rollout
        pairs = [] if champion is None else [(champion.version, CHAMPION_ROLE)]
        if rollout.canary is not None:
            pairs.append((rollout.canary.version, CANARY_ROLE))
        if rollout.shadow is not None:
            pairs.append((rollout.shadow.version, SHADOW_ROLE))
        return pairs

    @property
    def name(self) -> str:
        return self.settings.model_name

    async def refresh(self, reason: str) -> LoadedModel | None:
        """Load the version the alias points to now, unless it is the one serving (off the event loop)."""
        return await asyncio.to_thread(self._refresh, reason)

    async def load(self, version: str, reason: str) -> LoadedModel:
        """Load a given version now (admin rollback); raise :class:`ModelRefused` if it fails."""
        return await asyncio.to_thread(self._load_required, version, reason)

    def _refresh(self, reason: str) -> LoadedModel | None:
        with self._lock:  # one load at a time, whichever event loop or thread asks
            try:
                registry = read_registry(self.settings.tracking_uri, self.name)
            except Exception as error:  # noqa: BLE001 (registry unreachable: keep serving, try again later)
                log.warning("cannot resolve %s@champion (%s): %s", self.name, reason, error)
                self.registry_error = (
                    f"cannot read {self.name}@champion from the model registry (MLflow) at"
                    f" {urlsplit(self.settings.tracking_uri).netloc} ({reason}): {type(error).__name__}"
                )
                return None
            self.registry_error = None
            version, loaded = registry.champion, None
            if (
                version is not None
                and (self.current is None or self.current.version != version)
                and time.monotonic() >= self._refused.get(version, 0.0)
            ):
                loaded = self._load(version, reason)
            self._follow_rollout(registry, reason)
            return loaded

    def _follow_rollout(self, registry: RegistryRollout, reason: str) -> None:
        """Load (or let go of) the shadow and the canary the registry names now; unloadable ones are left out."""
        champion = self.current
        if champion is None:
            return
        wanted_shadow = registry.shadow if registry.shadow != champion.version else None
        wanted_canary = registry.challenger if registry.canary_share > 0 and registry.challenger != champion.version else None
        shadow = self._rollout_model(wanted_shadow, reason)
        canary = shadow if wanted_canary is not None and wanted_canary == wanted_shadow else self._rollout_model(
            wanted_canary, reason)
        rollout = Rollout(shadow=shadow, canary=canary, share=registry.canary_share if canary is not None else 0.0)
        if rollout != self.rollout:
            self.rollout = rollout  # the swap: one reference assignment
            log.info("rollout of %s: %s beside champion %s", self.name, rollout.describe(), champion.version)

    def _rollout_model(self, version: str | None, reason: str) -> LoadedModel | None:
        """The loaded ``version`` (kept if already serving in the rollout); ``None`` if unset or refused."""
        if version is None:
            return None
        for serving in (self.rollout.shadow, self.rollout.canary):
            if serving is not None and serving.version == version:
                return serving
        if time.monotonic() < self._refused.get(version, 0.0):
            return None
        started = time.perf_counter()
        try:
            model = self._load_blocking(version)
        except Exception as error:  # noqa: BLE001 (a rollout version that fails is left out; the champion answers)
            metrics.MODEL_LOADS.labels(outcome="refused").inc()
            if isinstance(error, ARTIFACT_ERRORS):
                self._artifact_refused(version, reason, error)
            self._refused[version] = time.monotonic() + RETRY_REFUSED_SECONDS
            log.error("refused %s version %s for the rollout (%s): %s; the champion answers for it",
                      self.name, version, reason, error)
            return None
        metrics.MODEL_LOADS.labels(outcome="loaded").inc()
        log.info("loaded %s version %s for the rollout (%s, %s path, %.1f s)", self.name, version, reason,
                 "fast" if model.predictor.fast else "pipeline", time.perf_counter() - started)
        return model

    def _load_required(self, version: str, reason: str) -> LoadedModel:
        with self._lock:
            loaded = self._load(version, reason)
        if loaded is None:
            raise ModelRefused(f"version {version} was refused; see the server log")
        return loaded

    def _load(self, version: str, reason: str) -> LoadedModel | None:
        started = time.perf_counter()
        try:
            model = self._load_blocking(version)
        except Exception as error:  # noqa: BLE001 (any failure refuses the version; the old one serves on)
            metrics.MODEL_LOADS.labels(outcome="refused").inc()
            if isinstance(error, ARTIFACT_ERRORS):
                self._artifact_refused(version, reason, error)
            self._refused[version] = time.monotonic() + RETRY_REFUSED_SECONDS
            serving = self.current.version if self.current else None
            log.error("refused %s version %s (%s): %s; still serving %s", self.name, version, reason, error, serving)
            return None
        previous = self.current.version if self.current else None
        if previous is None:
            _settle_heap()
        self.current = model  # the swap: one reference assignment
        metrics.MODEL_LOADS.labels(outcome="loaded").inc()
        metrics.MODEL_INFO.labels(version=model.version).set(time.time())
        log.info(
            "serving %s version %s (was %s, %s, %s path, loaded in %.1f s)",
            self.name, version, previous, reason, "fast" if model.predictor.fast else "pipeline",
            time.perf_counter() - started,
        )
        return model

    def _artifact_refused(self, version: str, reason: str, error: Exception) -> None:
        """Count, keep for ``/model-info`` and audit a version whose artifact failed its checks.

        The version is tried again after :data:`RETRY_REFUSED_SECONDS`; a retry failing the same
        way is counted again but neither kept nor audited again.
        """
        kind = "format" if isinstance(error, UnsafeArtifactError) else "integrity"
        ARTIFACT_REFUSALS.labels(reason=kind).inc()
        refusal = ArtifactRefusal(version, kind, str(error), datetime.now(UTC).isoformat(timespec="seconds"))
        if any((r.version, r.detail) == (version, refusal.detail) for r in self.artifact_refusals):
            return
        self.artifact_refusals = [*self.artifact_refusals, refusal][-KEPT_REFUSALS:]
        if self.dsn is None:
            return
        try:
            integrity.audit_refusal(self.dsn, actor="api", model_name=self.name, version=version, where=reason, error=error)
        except Exception as audit_error:  # noqa: BLE001 (the refusal stands; the log line is the record)
            log.error("could not audit the refusal of %s version %s: %s", self.name, version, audit_error)

    def _load_blocking(self, version: str) -> LoadedModel:
        if self.dsn is None:
            raise integrity.IntegrityError(
                f"{self.name} version {version}: no platform database to check the artifact's digests against"
            )
        uri = self.settings.tracking_uri
        with tracking.using(uri):  # `models:/` downloads resolve against the global registry URI
            loaded = load_version(uri, self.name, version, dsn=self.dsn)
        rows = example_rows(loaded.input_example, self.spec, self.record_type) or self._rows
        return prepare(self.name, version, loaded=loaded, spec=self.spec, rows=rows, threads=self.settings.threads)

    async def watch(self, redis_client: Any | None) -> None:
        """Follow the alias until cancelled: notifications when Redis is there, polling always."""
        tasks = [asyncio.create_task(self._poll())]
        if redis_client is not None:
            tasks.append(asyncio.create_task(self._listen(redis_client)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _poll(self) -> None:
        while True:
            await self.refresh("alias poll" if self.current else "start-up")
            delay = self.settings.model_poll_seconds if self.current else min(1.0, self.settings.model_poll_seconds)
            await asyncio.sleep(delay)

    async def _listen(self, redis_client: Any) -> None:
        channel = promotion_channel(self.name)
        while True:
            try:
                async with redis_client.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self.refresh(f"notification {message.get('data')!r}")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 (Redis away: polling carries on, resubscribe later)
                log.debug("promotion notifications unavailable: %s", error)
                await asyncio.sleep(1.0)
