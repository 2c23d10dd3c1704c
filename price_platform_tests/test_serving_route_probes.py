"""Every route of the API, probed with no key, a bad key and a key of the wrong role.

The routes come from the app's own route table, so a route added later is probed without a
change here. Public routes (health, readiness, metrics, the docs and the schema, v2 health)
answer without a key (a page of the docs that does not exist is a 404, never a 401); every other
route answers 401 without a key and with a bad one, and a ``predict`` key is refused (403) on
``/admin/*`` and admitted elsewhere. No probe gets a 5xx.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from test_serving_support import Champion, champion, wait_ready  # noqa: F401 (fixture)

from serving.app import create_app
from serving.auth import create_key

#: Routes anyone may call, by path template (the route table's ``path``).
PUBLIC = {
    "/health", "/ready", "/metrics",
    "/schema", "/schema/openapi.json", "/schema/swagger", "/schema/oauth2-redirect.html", "/schema/{path:str}",
    "/schema/assets/swagger-ui/{file_path:path}",
    "/v2/health/live", "/v2/health/ready",
}
#: The protocol's own 404 for paths under /v2 that no route serves: public, and never anything but 404.
NOT_FOUND_FALLBACKS = {"/v2/models", "/v2/{rest:path}", "/v2/models/{name:str}/{rest:path}"}
#: Route templates that must be among the probed ones: the enumeration cannot come back short unnoticed.
KNOWN = {"/predict", "/explain", "/feedback", "/model-info", "/admin/reload", "/admin/rollback",
         "/v2", "/v2/models/{name:str}", "/v2/models/{name:str}/ready", "/v2/models/{name:str}/infer", *PUBLIC}
ADMIN_PREFIX = "/admin"
PROBED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def secured(champion: Champion) -> Iterator[tuple[Litestar, TestClient, str]]:
    """The app with keys required, its client and a ``predict`` key; 401s are not rate-limited here."""
    settings = champion.settings.model_copy(
        update={"model_name": f"probed-{uuid.uuid4().hex[:6]}", "auth_enabled": True, "unauthorized_per_minute": 1_000_000}
    )
    own = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout, champion.tracking_uri,
                   champion.dsn)
    own.promote(own.register())
    _, predict_key = create_key(champion.dsn, "predict", "route probes")
    app = create_app(settings, spec=champion.spec, dsn=champion.dsn)
    with TestClient(app) as client:
        wait_ready(client)
        yield app, client, predict_key


def probes(app: Litestar, model_name: str) -> list[tuple[str, str, str]]:
    """(method, path template, concrete path) of every route and method, path parameters filled in."""
    values = {"name": model_name, "rest": "no/such/endpoint", "file_path": "swagger-ui.css", "path": "openapi.yaml"}
    found = []
    for route in app.routes:
        assert isinstance(route, HTTPRoute), f"a route that is not HTTP: {route.path} ({type(route).__name__})"
        concrete = re.sub(r"\{(\w+):\w+\}", lambda match: values[match.group(1)], route.path)
        found += [(method, route.path, concrete) for method in sorted(route.methods) if method in PROBED_METHODS]
    return found


def send(client: TestClient, method: str, path: str, key: str | None) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    return client.request(method, path, headers=headers, content=b"" if method != "GET" else None)


def test_every_route_is_enumerated(secured) -> None:
    app, _, _ = secured
    templates = {template for _, template, _ in probes(app, "m")}
    assert KNOWN <= templates, f"routes not found in the route table: {sorted(KNOWN - templates)}"
    documented = {re.sub(r"\{(\w+)\}", r"\1", path) for path in app.openapi_schema.paths or {}}
    served = {re.sub(r"\{(\w+):\w+\}", r"\1", template) for template in templates}
    assert documented <= served, f"documented but not in the route table: {sorted(documented - served)}"


def test_public_routes_answer_without_a_key(secured) -> None:
    app, client, _ = secured
    wrong = []
    for method, template, path in probes(app, app.state.services.settings.model_name):
        if template not in PUBLIC | NOT_FOUND_FALLBACKS:
            continue
        for key in (None, f"ppk_{uuid.uuid4().hex[:12]}_bad"):
            status = send(client, method, path, key).status_code
            if status != 404 if template in NOT_FOUND_FALLBACKS else status in (401, 403, 429) or status >= 500:
                wrong.append((method, path, "no key" if key is None else "bad key", status))
    assert wrong == []


def test_every_other_route_wants_a_valid_key_of_the_right_role(secured) -> None:
    app, client, predict_key = secured
    bad_keys = {"no key": None, "bad key": f"ppk_{uuid.uuid4().hex[:12]}_wrong", "malformed key": "not-a-key"}
    wrong = []
    probed = 0
    for method, template, path in probes(app, app.state.services.settings.model_name):
        if template in PUBLIC | NOT_FOUND_FALLBACKS:
            continue
        probed += 1
        for label, key in bad_keys.items():
            answer = send(client, method, path, key)
            if answer.status_code != 401 or "X-API-Key" not in answer.text:
                wrong.append((method, path, label, answer.status_code, answer.text[:200]))
        answer = send(client, method, path, predict_key)
        if template.startswith(ADMIN_PREFIX):
            if answer.status_code != 403 or "'admin' is needed" not in answer.text:
                wrong.append((method, path, "predict key on an admin route", answer.status_code, answer.text[:200]))
        elif answer.status_code in (401, 403) or answer.status_code >= 500:
            wrong.append((method, path, "predict key", answer.status_code, answer.text[:200]))
    assert probed >= 10
    assert wrong == []


def test_the_document_marks_the_same_routes_public(secured) -> None:
    app, _, _ = secured
    for path, item in (app.openapi_schema.paths or {}).items():
        for method in PROBED_METHODS:
            operation = getattr(item, method.lower(), None)
            if operation is None:
                continue
            template = next(t for _, t, _ in probes(app, "m") if re.sub(r"\{(\w+):\w+\}", r"{\1}", t) == path)
            public = template in PUBLIC
            assert bool(operation.security) is not public, (method, path, operation.security)
            assert ("401" in (operation.responses or {})) is not public, (method, path)
