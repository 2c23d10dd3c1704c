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
PREDICTIONS = Counter("predictions_total", "Predicted records by model version and outcome.", ["model_version", "outcome"])
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
HTTP_REQUESTS = Counter("http_requests_total", "Every HTTP request by endpoint and status code.", ["endpoint", "status"])
RATE_LIMITED = Counter("rate_limited_total", "Requests refused by the per-key rate limit.")


def count_requests(app: ASGIApp) -> ASGIApp:
    """ASGI middleware counting every response in ``http_requests_total`` (unknown paths as ``other``)."""

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
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS or path.startswith("/schema") else "other"
            _requests(endpoint, status).inc()

    return middleware


@functools.cache
def _requests(endpoint: str, status: int) -> Counter:
    """The ``http_requests_total`` child of one endpoint and status (few of each: kept)."""
    return HTTP_REQUESTS.labels(endpoint=endpoint, status=str(status))


ENDPOINTS = frozenset(
    ["/predict", "/explain", "/feedback", "/model-info", "/health", "/ready", "/metrics", "/admin/reload", "/admin/rollback"]
)


def render() -> tuple[bytes, str]:
    """The exposition text of every metric (summed over worker processes when there are several)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
