"""Prometheus metrics of the prediction API, safe with several worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``price-platform serve --workers N`` sets it), every
worker writes its samples to that folder and ``/metrics`` adds them up.
"""

from __future__ import annotations

import functools
import os

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

PREDICTION_LATENCY = Histogram(
    "prediction_latency_seconds", "Time to answer a prediction request.", ["endpoint"], buckets=LATENCY_BUCKETS
)
PREDICTIONS = Counter(
    "predictions_total",
    "Answered records by model version, role (champion, or canary: the challenger's share) and outcome.",
    ["model_version", "role", "outcome"],
)
MODEL_LATENCY = Histogram(
    "model_latency_seconds",
    "Per model version and role: for answers (champion, canary) the time to answer the request; for scores off the"
    " request path (shadow, and champion beside a canary's answer) the model call that priced them.",
    ["model_version", "role"],
    buckets=LATENCY_BUCKETS,
)
OFFPATH_WRITTEN = Counter("offpath_scores_written_total", "Off-path scores written to monitoring.rollout_predictions.")
OFFPATH_DROPPED = Counter(
    "offpath_scores_dropped_total",
    "Records not scored off the request path (queue full) or whose scores could not be written, by role.",
    ["role"],
)
for _role in ("shadow", "champion"):  # exported at 0 from the start, so the first drop is an increase
    OFFPATH_DROPPED.labels(role=_role)
OFFPATH_FAILURES = Counter(
    "offpath_score_failures_total",
    "Records a shadow (or the champion beside a canary) failed to price off the request path.",
    ["model_version", "role"],
)
CANARY_FALLBACKS = Counter(
    "canary_fallbacks_total", "Requests routed to the canary that it failed to answer and the champion answered."
)
LIVE_RMSLE = Gauge(
    "live_rmsle",
    "RMSLE of each model version and role on the feedback (actual prices) of the last day; NaN without any yet.",
    ["model_version", "role"],
    multiprocess_mode="mostrecent",
)
CACHE = Counter("prediction_cache_total", "Prediction cache look-ups by result (hit, miss).", ["result"])
CACHE_HIT, CACHE_MISS = CACHE.labels(result="hit"), CACHE.labels(result="miss")
MODEL_LOADS = Counter("model_load_events_total", "Model versions loaded or refused.", ["outcome"])
MODEL_INFO = Gauge(
    "model_loaded_timestamp_seconds", "When a model version started serving.", ["version"], multiprocess_mode="max"
)
LOGS_WRITTEN = Counter("prediction_logs_written_total", "Prediction log rows written to PostgreSQL.")
LOGS_DROPPED = Counter("prediction_logs_dropped_total", "Prediction log rows dropped because the buffer was full.")
LOG_BUFFER = Gauge("prediction_log_buffer_rows", "Prediction log rows waiting for PostgreSQL.", multiprocess_mode="livesum")
SHARED_STORE_FALLBACKS = Counter(
    "shared_store_fallbacks_total", "Times Redis failed and the cache and rate limits fell back to this process."
)
HTTP_REQUESTS = Counter(
    "http_requests_total", "Every HTTP request by route template (or unrouted) and status code.", ["endpoint", "status"]
)
RATE_LIMITED = Counter("rate_limited_total", "Requests refused by the per-key rate limit.")


def count_requests(app: ASGIApp) -> ASGIApp:
    """ASGI middleware counting every routed response in ``http_requests_total``, by route template.

    The label is the template of the route that answered (``/v2/models/{name}/infer``, never the
    path the client sent), so however many paths callers make up, the label values stay the
    routes of the app. Requests that match no route never reach this middleware: see
    :func:`count_unrouted`.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_and_note)
        finally:
            _requests(scope.get("path_template") or UNROUTED, status).inc()

    return middleware


async def count_unrouted(error: Exception, scope: Scope) -> None:
    """``after_exception`` hook: a request no route matched (404, 405) counts under the one label ``unrouted``."""
    if scope["type"] == "http" and "route_handler" not in scope:
        _requests(UNROUTED, getattr(error, "status_code", 500)).inc()


#: The ``endpoint`` label of requests that matched no route.
UNROUTED = "unrouted"


@functools.cache
def _requests(endpoint: str, status: int) -> Counter:
    """The ``http_requests_total`` child of one route template and status (few of each: kept)."""
    return HTTP_REQUESTS.labels(endpoint=endpoint, status=str(status))


@functools.cache
def model_latency(version: str, role: str) -> Histogram:
    """The ``model_latency_seconds`` child of one version and role (few of each: kept)."""
    return MODEL_LATENCY.labels(model_version=version, role=role)


@functools.cache
def answered(version: str, role: str, outcome: str) -> Counter:
    """The ``predictions_total`` child of one version, role and outcome (few of each: kept)."""
    return PREDICTIONS.labels(model_version=version, role=role, outcome=outcome)


def render() -> tuple[bytes, str]:
    """The exposition text of every metric (summed over worker processes when there are several)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
