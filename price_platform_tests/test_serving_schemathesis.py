"""Schemathesis against the app's own OpenAPI schema, in-process: no 5xx, no response that breaks the schema.

Every operation gets up to ``CASES`` positive and ``CASES`` negative generated cases (operations
without inputs have fewer distinct cases; the counts are printed and the ones with a body are
held to at least 1,000). The pytest integration of schemathesis does not work with this pytest,
so the strategies are driven by Hypothesis directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from litestar.testing import TestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from serving.app import create_app
from test_serving_support import Champion, champion, wait_ready  # noqa: F401 (fixture)

CASES = 500
CHECKS = [not_a_server_error, response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def app(champion: Champion):
    app = create_app(champion.settings, spec=champion.spec, dsn=champion.dsn)
    with TestClient(app) as client:
        wait_ready(client)
        yield app


def test_api_never_answers_5xx_nor_off_schema(app) -> None:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seen: list[int] = []

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def call(case) -> None:
                seen.append(1)
                case.call_and_validate(checks=CHECKS)

            try:
                call()
            except Unsatisfiable:  # no inputs to make invalid (e.g. GET /health has no parameters)
                assert mode is GenerationMode.NEGATIVE and not seen
            counts[name] = counts.get(name, 0) + len(seen)
    print("schemathesis cases per operation:", counts)
    for name in ("POST /predict", "POST /explain", "POST /feedback", "POST /admin/reload", "POST /admin/rollback"):
        assert counts[name] >= 2 * CASES * 0.99, (name, counts[name])
