"""Schemathesis against a running API with keys checked: every check it has, at least 1,000 cases per operation.

``price-platform serve`` runs in a child process with ``auth_enabled`` on; the ``st`` command
line fetches ``/schema/openapi.json`` from it and tests every operation with ``--checks all``
(schema-valid and schema-breaking cases, missing and wrong keys, undocumented methods...) and
an admin key in the ``X-API-Key`` header, in its coverage and fuzzing phases (the stateful phase,
chains of calls along inferred links, is left out: it doubled the run's time). Any failure fails
the test. The cases per operation are counted by the server itself (``http_requests_total`` by
route); operations without inputs (``GET /health``) have few distinct cases.

``st`` runs in the test's own folder, so its cache (``.schemathesis/``: replayed crashes, operations
it skipped after 405 answers, learned authentication) and its example database start empty in every
run and never come from or go to the checkout. Once in a CI run (clean clone, 940 other tests
before it) one operation, ``POST /admin/reload``, got only 27 requests while every check passed:
Hypothesis stopped generating for it early and why is not known (run alone, the same test gave it
1,023). An operation that falls short of ``CASES`` is therefore run again on its own, with every
check and another seed, and its count is the sum of both runs; either run failing fails the test.

The Open Inference Protocol's ``POST /v2/models/{name}/infer`` may answer a schema-valid body
with 400: its schema describes each tensor, but not what JSON Schema cannot say (one tensor per
feature, every tensor holding the same number of values as its shape says), so the run's
configuration (:data:`CONFIG`) adds 400 (and 422, records the model cannot price, as for
``/predict``'s rules) to the statuses that operation may give valid data. Every other check applies.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serving_support import Champion, Server, champion, server_env  # noqa: F401 (fixture)

from serving.auth import HEADER, create_key

CASES = 1_000
#: The operations that take inputs, so Hypothesis can make ``CASES`` distinct cases for each.
WITH_INPUTS = (
    "/predict", "/explain", "/feedback", "/admin/reload", "/admin/rollback",
    "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/infer",
)
#: Schemathesis's configuration: the statuses a schema-valid v2 inference may get (see the module's docstring).
CONFIG = """
[[operations]]
include-name = "POST /v2/models/{name}/infer"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def secured_server(champion: Champion, tmp_path_factory: pytest.TempPathFactory):
    """A server with keys checked, serving a champion of its own (the run rolls back and reloads it)."""
    settings = champion.settings.model_copy(update={"model_name": f"contract-{uuid.uuid4().hex[:6]}"})
    own = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout, champion.tracking_uri, champion.dsn)
    own.promote(own.register())
    _, key = create_key(champion.dsn, "admin", "schemathesis")
    home = tmp_path_factory.mktemp("contract")
    env = server_env(settings, auth_enabled=True, unauthorized_per_minute=1_000_000, redis_url="")
    server = Server(env, log_path=home / "server.log")
    try:
        server.wait_ready()
        yield server, key, home
    finally:
        server.stop()


def requests_per_route(server: Server) -> Counter[str]:
    """How many requests the server answered on each route template, whatever the status (its own counter)."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text):
        if family.name == "http_requests":
            for sample in family.samples:
                if sample.name == "http_requests_total":
                    counts[sample.labels["endpoint"]] += int(sample.value)
    return counts


def run_schemathesis(server: Server, key: str, home: Path, seed: int, *only: str) -> None:
    """``st run`` with every check against the server (only the operations on the paths ``only``, if given); assert it passes."""
    config = home / "schemathesis.toml"
    config.write_text(CONFIG)
    name = f"schemathesis-{seed}"
    command = [
        str(Path(sys.executable).parent / "st"), "--config-file", str(config), "run", f"{server.url}/schema/openapi.json",
        "--checks", "all", "--header", f"{HEADER}: {key}", "--max-examples", str(CASES), "--seed", str(seed),
        "--phases", "coverage,fuzzing", "--workers", "2", "--suppress-health-check", "all",
        "--report", "ndjson", "--report-ndjson-path", str(home / f"{name}.ndjson"), "--request-timeout", "30",
        *(option for path in only for option in ("--include-path", path)),
    ]
    run = subprocess.run(command, capture_output=True, text=True, cwd=home, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    (home / f"{name}.txt").write_text(run.stdout + run.stderr)
    print(run.stdout[-3000:])
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-20000:]}\n{run.stderr[-3000:]}"


def test_schemathesis_finds_no_failure_with_every_check(secured_server) -> None:
    server, key, home = secured_server
    before = requests_per_route(server)
    run_schemathesis(server, key, home, 19)
    counts = requests_per_route(server) - before
    print("requests per route during the run:", dict(counts))
    short = [path for path in WITH_INPUTS if counts[path] < CASES]
    if short:  # see the module's docstring
        print("run again on their own, with fewer than", CASES, "cases:", {path: counts[path] for path in short})
        run_schemathesis(server, key, home, 20, *short)
        counts = requests_per_route(server) - before
        print("requests per route after the second run:", dict(counts))
    for path in WITH_INPUTS:
        assert counts[path] >= CASES, (path, counts)
