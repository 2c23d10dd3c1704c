"""Schemathesis against the app's own OpenAPI schema, in-process: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from serving.app import create_app
from test_serving_support import Champion, champion, wait_ready  # noqa: F401 (fixture)

CASES = 1000
generated: Counter[str] = Counter()


@pytest.fixture(scope="module")
def api_schema(champion: Champion):
    app = create_app(champion.settings, spec=champion.spec, dsn=champion.dsn)
    with TestClient(app) as client:
        wait_ready(client)
        yield schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    for operation, count in sorted(generated.items()):
        print(f"schemathesis: {count} cases for {operation}")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_never_answers_5xx_nor_off_schema(case) -> None:
    generated[f"{case.operation.method.upper()} {case.operation.path}"] += 1
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, negative_data_rejection])
