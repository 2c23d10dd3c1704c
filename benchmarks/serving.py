"""Serving speed: this API beside ``mlflow models serve`` and a bare Litestar echo, on one champion.

One run starts an embedded PostgreSQL and an MLflow server in a temporary folder, fits the
platform's default champion the way the ``candidate_model`` asset does
(:func:`price_platform.training.candidate.fit_candidate`: the kernel ridge + XGBoost blend of
``build_blend_pipeline``, default settings, calibrated, refitted on train + validation of the
bundled sample's time split), registers it with :func:`~price_platform.training.candidate.register`
and promotes it to ``champion``. Then ``price-platform serve`` (with Redis for the cache and
rate limits when one answers at ``PRICE_PLATFORM_REDIS_URL`` or on the local default port, as in
a multi-worker deployment; the in-process stores otherwise), ``mlflow models serve
--env-manager local`` and a bare Litestar echo endpoint each run with one uvicorn worker, and the
same load generator (Debian's ``wrk``, 2 threads, 32 connections, one-row JSON bodies that never
repeat, so the prediction cache never answers) measures each on loopback. With one ``wrk`` thread
the echo server was only about half busy: the generator, not the server, set the echo figure.

What the in-process ratios compare (the comparators on one thread):

* ``fast_path_vs_inplace_p50``: the compiled blend's ``predict`` of one record (encoding, kernel
  ridge, booster, average, exp) against the blend's booster alone, ``booster.inplace_predict``, on
  that record already encoded (the booster's own float32 columns).
* ``batch_per_row_vs_inplace``: a 1,000-record batch through the API (JSON body over loopback,
  decoding, encoding, both members, ids, gzip-compressed JSON answer; the client accepts gzip)
  per record, against ``booster.inplace_predict`` per record on the same 1,000 records encoded,
  timed in this process right after each batch (see :func:`batch_costs`). The API predicts a
  batch this large with two threads (:meth:`serving.blend.CompiledBlend.predict`), the
  comparator runs on one: ``batch_cpu_per_row_vs_inplace`` gives the API process's CPU time per
  record of those batches (all its threads) against the CPU time of the same ``inplace_predict``
  (its thread's), what a record costs the API where the first figure is how long the batch
  takes. CPU time against CPU time: until 19.3 the comparator was its wall time, which on a
  loaded host grows with the waits for a core (in one run here 289 us a record of wall time
  against about 20 us of CPU), so that the ratio fell the busier the host was. The API also logs every
  record to the benchmark's PostgreSQL, on the same two cores: its ``COPY`` of the batch's
  rows takes about 14-30 ms of a core per 1,000 records (host-dependent). The log writer writes
  in the moments when no request is in flight (:mod:`serving.prediction_log`): after each batch
  this process waits until the batch's rows are written, then times the comparators, so that
  work is in neither figure and slows neither side;
  ``batch_sustained_per_row_vs_inplace`` sends ``SUSTAINED_BATCHES`` batches back to back
  after them, with no pause, and so includes it: what a record costs when the API, its log and
  PostgreSQL share the two cores under steady load.
  The booster is only part of the blend's arithmetic, so ``batch_per_row_vs_members`` also
  compares the batch with both members on the same encoded records (``inplace_predict`` plus
  kernel ridge evaluated as its exact quadratic form, see :mod:`serving.blend`): the model's own
  cost with no API around it.
* ``cache_hit_vs_miss_p50``: one record answered from the cache against one that misses.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from benchmarks.results import Result
from price_platform.testing import free_port

CONNECTIONS = 32
#: Load-generator threads: one could not keep the bare echo server busy (see the module docstring).
WRK_THREADS = 2
SECONDS = 15
#: ``wrk`` leaves answers slower than its timeout (2 s by default) out of its latencies: on a loaded host
#: ``mlflow models serve`` answered almost none within 2 s, and its p50 and p99 read 0.
TIMEOUT_SECONDS = 30
#: Timed 1,000-record batches (after one untimed).
BATCH_REPEATS = 30
#: Batches then sent one after another with no pause (``batch_sustained_per_row_vs_inplace``).
SUSTAINED_BATCHES = 20
COMMAND = "make bench BENCH=serving"
BIN = Path(sys.executable).parent


def echo_app() -> Any:
    """The bare Litestar baseline: an endpoint that returns the body it got."""
    from litestar import Litestar, Request, post

    @post("/echo", status_code=200)
    async def echo(request: Request) -> bytes:
        return await request.body()

    return Litestar([echo])


def wait_http(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200")


@contextmanager
def started(command: list[str], env: dict[str, str], ready_url: str, log: Path):
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(ready_url, process)
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wrk(url: str, method_path: str, template: str, headers: dict[str, str], folder: Path) -> tuple[float, float, float]:
    """(requests/s, p50 s, p99 s) of ``wrk`` posting ``template`` with a counter in place of ``%d``.

    Each ``wrk`` thread counts in its own range (``setup`` gives it an offset), so no body is
    sent twice in a run and the prediction cache never answers.
    """
    header_lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script = folder / "post.lua"
    span = 600_000 // WRK_THREADS
    script.write_text(
        f'wrk.method = "POST"\nwrk.path = "{method_path}"\n{header_lines}'
        f"local template = [==[{template}]==]\nlocal threads = 0\n"
        f"setup = function(thread)\n  thread:set(\"offset\", threads * {span})\n  threads = threads + 1\nend\n"
        "init = function(args)\n  counter = offset\nend\n"
        "request = function()\n  counter = counter + 1\n"
        "  return wrk.format(nil, nil, nil, string.format(template, 1000 + counter % 600000))\nend\n"
    )
    result = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", f"{TIMEOUT_SECONDS}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )
    text = result.stdout
    if "Non-2xx" in text:
        raise RuntimeError(f"wrk saw error responses against {url}{method_path}:\n{text}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    return rps, _percentile(text, "50%"), _percentile(text, "99%")


def _percentile(text: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def paired_p50(first: Any, second: Any, repeats: int) -> tuple[float, float]:
    """p50s of two functions called in turn (not one run after the other: the host's speed drifts)."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, kept in zip((first, second), times, strict=True):
            kept.append(timed(function))
    return float(np.median(times[0])), float(np.median(times[1]))


def run() -> list[Result]:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        return _run(Path(folder))


def training_split(spec: Any, settings: Any) -> Any:
    """The bundled sample split into train, validation and holdout windows as the training asset splits the mart."""
    import pandas as pd

    from price_platform.modeling import read_sample
    from price_platform.training.dataset import split

    frame = read_sample(spec)
    months = pd.to_datetime({"year": frame["year_sold"], "month": frame["mo_sold"], "day": 1})
    mart = frame.assign(record_id=frame[spec.id_column].astype(str), partition_key=months.dt.strftime("%Y-%m-%d"),
                        sale_month=months.dt.date, arrival_seq=range(len(frame)))
    return split(mart, spec, holdout_months=settings.holdout_months, validation_months=settings.validation_months,
                 seed=settings.seed)


def shared_redis() -> str | None:
    """The Redis URL the served API should use, when a Redis answers there."""
    import redis

    url = os.environ.get("PRICE_PLATFORM_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError):
        return None
    return url


def forget_cached_prices(url: str, model_name: str) -> None:
    """Delete the prices an earlier run cached for ``model_name`` (same data, same fit: they would answer)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"price-platform:cache:{model_name}:*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


def _run(folder: Path) -> list[Result]:
    from sqlalchemy.engine import make_url

    from price_platform.datasets import load_dataset
    from price_platform.postgres import EmbeddedPostgres, PostgresServer
    from price_platform.registry.promotion import Verdict, promote
    from price_platform.settings import DEFAULT_DATASET, Settings
    from price_platform.training.candidate import fit_candidate, register
    from price_platform.warehouse import migrate
    from serving.auth import create_key

    spec = load_dataset(DEFAULT_DATASET)
    settings = Settings()
    data = training_split(spec, settings)
    trained = fit_candidate(spec, data, {}, coverage=settings.interval_coverage, seed=settings.seed, threads=1,
                            parallel_trees=settings.parallel_trees)
    pipeline, holdout = trained.pipeline, data.holdout

    database = EmbeddedPostgres(folder / "pg", free_port())
    database.start()
    try:
        server = PostgresServer(server_url=make_url(database.url), database_name="bench")
        server.ensure_databases()
        migrate(server.dsn())
        # MLflow's server would otherwise start job-runner processes that compete for the two cores.
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow_port = free_port()
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        mlflow_command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                          "--backend-store-uri", server.url("mlflow"), "--artifacts-destination",
                          str(folder / "artifacts"), "--workers", "1"]
        with started(mlflow_command, env, f"{tracking_uri}/health", folder / "mlflow.log"):
            version = register(trained, spec, data, tracking_uri=tracking_uri, model_name="bench-price-model",
                               dsn=server.dsn(), dbt_manifest_hash="none").version
            promote(tracking_uri, "bench-price-model", version, dsn=server.dsn(), actor="bench",
                    check=lambda _: Verdict(True, "benchmark"))
            _, key = create_key(server.dsn(), "predict", "benchmark")
            serve_env = {
                **env, "PRICE_PLATFORM_HOME": str(folder), "PRICE_PLATFORM_DATABASE_URL": database.url,
                "PRICE_PLATFORM_DATABASE_NAME": "bench", "PRICE_PLATFORM_MLFLOW_TRACKING_URI": tracking_uri,
                "PRICE_PLATFORM_MODEL_NAME": "bench-price-model", "PRICE_PLATFORM_RATE_LIMIT_PER_MINUTE": "100000000",
                "MLFLOW_TRACKING_URI": tracking_uri,
            }
            redis_url = shared_redis()
            if redis_url:
                serve_env["PRICE_PLATFORM_REDIS_URL"] = redis_url
                forget_cached_prices(redis_url, "bench-price-model")
            print(f"champion: the blend, version {version}; cache and rate limits in {redis_url or 'the process'}",
                  flush=True)
            return _measure(folder, serve_env, key, spec, pipeline, holdout)
    finally:
        database.stop()


def request_records(spec: Any, holdout: Any) -> list[dict[str, Any]]:
    """The holdout's records as JSON objects, repeated up to 1,000 (the batch; the first is the one-row body)."""
    frame = holdout[spec.features].astype(object).where(holdout[spec.features].notna(), None)
    records = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()} for row in frame.to_dict("records")]
    return (records * (1000 // len(records) + 1))[:1000]


def batch_costs(port: int, pid: int, body: bytes, headers: dict[str, str], model: InProcess) -> dict[str, float]:
    """Per-record p50s of the 1,000-record batch through the API and, timed right after each batch, of its comparators.

    The machine's speed drifts (a shared host: the same ``inplace_predict`` took 23 ms in one
    minute and 40 ms in another), so each comparator is timed between two batches rather than
    minutes apart, and each figure is the median of ``BATCH_REPEATS`` such rounds. Also the API
    process's CPU time per record of those batches (all its threads). One kept-alive
    connection, stdlib client: little time of its own.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post() -> None:
        connection.request("POST", "/predict", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/predict answered {response.status} to the batch")

    times: dict[str, list[float]] = {"batch": [], "inplace": [], "inplace_cpu": [], "members": []}
    cpu = 0.0
    try:
        logged = logged_rows(port)
        for repeat in range(BATCH_REPEATS + 1):
            cpu_before = cpu_seconds(pid)
            batch = timed(post)
            batch_cpu = cpu_seconds(pid) - cpu_before
            logged += len(model.rows)
            wait_until_logged(port, logged)  # PostgreSQL and the log writer idle again
            cpu_start = time.thread_time()
            inplace = timed(model.inplace_many)
            inplace_cpu = time.thread_time() - cpu_start
            members = timed(model.members_many)
            if repeat:  # the first round warms up
                times["batch"].append(batch)
                times["inplace"].append(inplace)
                times["inplace_cpu"].append(inplace_cpu)
                times["members"].append(members)
                cpu += batch_cpu
        sustained = timed(lambda: [post() for _ in range(SUSTAINED_BATCHES)]) / SUSTAINED_BATCHES
    finally:
        connection.close()
    rows = len(model.rows)
    per_record = {name: float(np.median(values)) / rows for name, values in times.items()}
    return {**per_record, "batch_cpu": cpu / BATCH_REPEATS / rows, "sustained": sustained / rows}


def api_metric(port: int, name: str) -> float | None:
    """The first sample named ``name`` (plus any suffix or labels) on the API's ``/metrics``, if there is one."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.search(rf"^{name}\S*\s+([\d.e+]+)", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def logged_rows(port: int) -> float:
    """The API's ``prediction_logs_written_total``."""
    return api_metric(port, "prediction_logs_written_total") or 0.0


def wait_until_logged(port: int, rows: float, timeout: float = 60.0) -> None:
    """Wait until the API has written ``rows`` prediction-log rows in all."""
    wait_until(lambda: logged_rows(port) >= rows, timeout, 0.01,
               f"the API on port {port} had not written {rows:.0f} log rows after {timeout:.0f} s")


def wait_until(ready: Callable[[], bool], timeout: float, poll: float, failure: str) -> None:
    """Ask ``ready()`` every ``poll`` seconds until it is true; ``TimeoutError(failure)`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(poll)


def timed(function: Any) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def wait_for_the_log(port: int, timeout: float = 120.0) -> None:
    """Wait until the API has written its prediction-log backlog (``prediction_log_buffer_rows`` 0).

    After the one-row load the writer still has tens of thousands of rows to send: timed
    batches would share the process and the second core with that backlog, not only with
    their own log rows.
    """
    wait_until(lambda: api_metric(port, "prediction_log_buffer_rows") == 0, timeout, 0.5,
               f"the API on port {port} still had prediction-log rows to write after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(folder: Path, env: dict[str, str], key: str, spec: Any, pipeline: Any, holdout: Any) -> list[Result]:
    thousand = request_records(spec, holdout)
    record = thousand[0]
    template = json.dumps({**record, "lot_area": 123456789}).replace("123456789", "%d")
    lot_area_index = spec.features.index("lot_area")
    row = [record[c] for c in spec.features]
    row[lot_area_index] = 123456789
    mlflow_template = json.dumps({"dataframe_split": {"columns": spec.features, "data": [row]}}).replace("123456789", "%d")
    json_headers = {"Content-Type": "application/json"}

    model = InProcess(spec, pipeline, thousand)
    api_port, mlflow_port, echo_port = free_port(), free_port(), free_port()
    api = [str(BIN / "price-platform"), "serve", "--workers", "1", "--port", str(api_port)]
    with started(api, env, f"http://127.0.0.1:{api_port}/ready", folder / "api.log") as api_process:
        api_rps, api_p50, api_p99 = wrk(f"http://127.0.0.1:{api_port}", "/predict", template,
                                        {**json_headers, "X-API-Key": key}, folder)
        wait_for_the_log(api_port)
        batch = batch_costs(api_port, api_process.pid, json.dumps(thousand).encode(),
                            {**json_headers, "X-API-Key": key, "Accept-Encoding": "gzip"}, model)
    print(f"price-platform: {api_rps:.0f} req/s, p50 {api_p50 * 1e3:.2f} ms, p99 {api_p99 * 1e3:.2f} ms", flush=True)

    mlflow = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/bench-price-model@champion", "--env-manager",
              "local", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
    with started(mlflow, env, f"http://127.0.0.1:{mlflow_port}/ping", folder / "mlflow-serve.log"):
        ml_rps, ml_p50, ml_p99 = wrk(f"http://127.0.0.1:{mlflow_port}", "/invocations", mlflow_template, json_headers, folder)
    print(f"mlflow models serve: {ml_rps:.0f} req/s, p50 {ml_p50 * 1e3:.2f} ms, p99 {ml_p99 * 1e3:.2f} ms", flush=True)

    echo = [str(BIN / "python"), "-m", "uvicorn", "benchmarks.serving:echo_app", "--factory", "--port", str(echo_port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    probe = f"http://127.0.0.1:{echo_port}/echo"
    with started(echo, {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, probe.replace("/echo", "/schema"),
                 folder / "echo.log"):
        echo_rps, _, _ = wrk(f"http://127.0.0.1:{echo_port}", "/echo", template, json_headers, folder)
    print(f"litestar echo: {echo_rps:.0f} req/s", flush=True)

    fast_p50, inplace_p50 = paired_p50(model.fast_one, model.inplace_one, 2000)
    hit_p50, miss_p50 = cache_costs(spec, pipeline, holdout, env)
    batch_per_row, inplace_row_1000, members_row_1000 = batch["batch"], batch["inplace"], batch["members"]
    inplace_cpu_row_1000 = batch["inplace_cpu"]
    batch_cpu_per_row, sustained_per_row = batch["batch_cpu"], batch["sustained"]
    print(f"fast path p50 {fast_p50 * 1e6:.0f} us vs inplace_predict {inplace_p50 * 1e6:.0f} us; "
          f"1,000-row batch {batch_per_row * 1e6:.1f} us/row ({batch_cpu_per_row * 1e6:.1f} us/row of server CPU) "
          f"vs inplace {inplace_row_1000 * 1e6:.1f} us/row ({inplace_cpu_row_1000 * 1e6:.1f} us/row of CPU), "
          f"both members {members_row_1000 * 1e6:.1f} us/row; back to back {sustained_per_row * 1e6:.1f} us/row; "
          f"cache hit {hit_p50 * 1e6:.0f} us vs miss {miss_p50 * 1e6:.0f} us", flush=True)

    def result(name: str, value: float, goal: str, met: bool) -> Result:
        return Result(name=name, value=value, unit="ratio", goal=goal, met=met, command=COMMAND)

    return [
        result("predict_rps_vs_mlflow", api_rps / ml_rps, ">= 20", api_rps / ml_rps >= 20),
        result("predict_p99_vs_mlflow", api_p99 / ml_p99, "<= 0.1", api_p99 / ml_p99 <= 0.1),
        result("predict_rps_vs_echo", api_rps / echo_rps, ">= 0.2", api_rps / echo_rps >= 0.2),
        result("fast_path_vs_inplace_p50", fast_p50 / inplace_p50, "<= 2", fast_p50 / inplace_p50 <= 2),
        result("batch_per_row_vs_inplace", batch_per_row / inplace_row_1000, "<= 1.5", batch_per_row / inplace_row_1000 <= 1.5),
        result("batch_per_row_vs_members", batch_per_row / members_row_1000, "<= 2", batch_per_row / members_row_1000 <= 2),
        result("batch_cpu_per_row_vs_inplace", batch_cpu_per_row / inplace_cpu_row_1000, "<= 1.5",
               batch_cpu_per_row / inplace_cpu_row_1000 <= 1.5),
        result("batch_sustained_per_row_vs_inplace", sustained_per_row / inplace_row_1000, "<= 3",
               sustained_per_row / inplace_row_1000 <= 3),
        result("cache_hit_vs_miss_p50", hit_p50 / miss_p50, "<= 0.5", hit_p50 / miss_p50 <= 0.5),
    ]


class InProcess:
    """The comparators, in this process on one thread: the compiled blend and its booster on the batch's records.

    They get the records already encoded, in the columns each member reads (float32 for the
    booster), so they time the model's arithmetic and nothing else.
    """

    def __init__(self, spec: Any, pipeline: Any, records: list[dict[str, Any]]) -> None:
        from serving.blend import CompiledBlend
        from serving.fast_path import compile_pipeline

        self.compiled = compile_pipeline(pipeline, spec.features)
        if not isinstance(self.compiled, CompiledBlend):
            raise RuntimeError(f"the champion compiled to {type(self.compiled).__name__}, not the blend")
        self.rows = [tuple(record[name] for name in spec.features) for record in records]
        encoded = self.compiled.encode(self.rows)
        self.trees = np.ascontiguousarray(encoded[:, self.compiled.tree_columns], dtype=np.float32)
        self.kernel = np.ascontiguousarray(encoded[:, self.compiled.kernel_columns])
        self.one_tree_row = self.trees[:1].copy()

    def fast_one(self) -> None:
        """The compiled blend's ``predict`` of one record (encoding, kernel ridge, booster, average, exp)."""
        self.compiled.predict(self.rows[:1])

    def inplace_one(self) -> None:
        self._inplace(self.one_tree_row)

    def inplace_many(self) -> None:
        self._inplace(self.trees)

    def members_many(self) -> None:
        """Both members on all the records: ``inplace_predict`` plus kernel ridge's quadratic form."""
        self.compiled.member_outputs(self.kernel, self.trees)

    def _inplace(self, matrix: np.ndarray) -> np.ndarray:
        return self.compiled.booster.inplace_predict(
            matrix, iteration_range=self.compiled.iteration_range, missing=np.nan, validate_features=False
        )


def cache_costs(spec: Any, pipeline: Any, holdout: Any, env: dict[str, str]) -> tuple[float, float]:
    """p50 of a one-record prediction answered from the cache and of one that misses (Redis when it answers)."""
    from serving.batching import MicroBatcher
    from serving.cache import SharedStore, redis_client
    from serving.fast_path import compile_pipeline
    from serving.model_store import LoadedModel
    from serving.pricing import Pricing
    from serving.schemas import build_schemas

    redis_url = os.environ.get("PRICE_PLATFORM_REDIS_URL", "redis://127.0.0.1:6379/0")
    schemas = build_schemas(spec, 1000)
    model = LoadedModel("bench", f"bench-{time.time_ns()}", compile_pipeline(pipeline, spec.features), pipeline, 0.2,
                        {}, "", "", "")
    record_values = holdout[spec.features].astype(object).where(holdout[spec.features].notna(), None).iloc[0].to_dict()
    record_values = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in record_values.items()}

    async def measure() -> tuple[float, float]:
        redis = redis_client(redis_url)
        try:
            await redis.ping()
        except Exception:  # noqa: BLE001 (no Redis here: the in-process store is what serves)
            await redis.aclose()
            redis = None
        pricing = Pricing(spec, None, SharedStore(redis, 10**9), MicroBatcher(), None, None)  # type: ignore[arg-type]
        hit = msgspec.convert(record_values, schemas.record)
        await pricing.prices(model, [hit])
        counter = iter(range(10**9))

        async def timed(records_for: Any, repeats: int) -> float:
            times = []
            for _ in range(repeats):
                records = records_for()
                start = time.perf_counter()
                await pricing.prices(model, records)
                times.append(time.perf_counter() - start)
            return float(np.median(times))

        hit_p50 = await timed(lambda: [hit], 2000)
        miss_p50 = await timed(
            lambda: [msgspec.convert({**record_values, "lot_area": 1000 + next(counter)}, schemas.record)], 2000
        )
        await pricing.shared.close()
        return hit_p50, miss_p50

    return asyncio.run(measure())
