"""The API's request metrics: labelled by route template, so made-up paths cannot grow them without bound."""

from __future__ import annotations

import uuid

from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_serving_support import Champion, champion, wait_ready  # noqa: F401 (fixture)

from serving import metrics
from serving.app import create_app


def request_counts() -> dict[tuple[str, str], float]:
    """``http_requests_total`` of this process by (endpoint, status)."""
    body, _ = metrics.render()
    return {
        (sample.labels["endpoint"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "http_requests"
        for sample in family.samples
        if sample.name == "http_requests_total"
    }


def test_made_up_paths_add_no_label_values(champion: Champion) -> None:
    app = create_app(champion.settings, spec=champion.spec, dsn=champion.dsn)
    templates = {route.path_format for route in app.routes} | {metrics.UNROUTED}
    with TestClient(app) as client:
        wait_ready(client)
        before = request_counts()
        tokens = [uuid.uuid4().hex for _ in range(40)]
        for token in tokens:
            assert client.get(f"/schema/{token}").status_code == 404  # a route: /schema/{path}
            assert client.get(f"/{token}/x").status_code == 404  # no route at all
            assert client.get(f"/predict/{token}").status_code == 404
        assert client.get("/health").status_code == 200
        assert client.put("/health").status_code == 405
        after = request_counts()
    endpoints = {endpoint for endpoint, _ in after}
    assert endpoints <= templates, endpoints - templates
    exposition = metrics.render()[0].decode()
    assert not any(token in exposition for token in tokens)
    grew = {label: after[label] - before.get(label, 0.0) for label in after if after[label] != before.get(label, 0.0)}
    assert grew[(metrics.UNROUTED, "404")] == 80 and grew[(metrics.UNROUTED, "405")] == 1, grew
    assert grew[("/schema/{path}", "404")] == 40 and grew[("/health", "200")] == 1, grew
