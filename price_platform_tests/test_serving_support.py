"""Fixtures of the serving tests: a small champion registered on a real MLflow server, and app helpers."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.modeling import build_xgboost_pipeline, read_sample
from price_platform.registry.promotion import Verdict, promote
from price_platform.registry.versions import register_candidate
from price_platform.settings import Settings

TREES = 60
HALF_WIDTH = 0.2


@dataclasses.dataclass(frozen=True)
class Champion:
    """A registered model with alias ``champion``, its training pieces and serving settings."""

    settings: Settings
    spec: DatasetSpec
    pipeline: Any
    train: pd.DataFrame
    holdout: pd.DataFrame
    tracking_uri: str
    dsn: str
    version: str = ""  # the version promoted first

    def register(self, *, pipeline: Any | None = None, half_width: float = HALF_WIDTH) -> str:
        """Register another version (not promoted); return its number."""
        return register_candidate(
            self.tracking_uri,
            self.settings.model_name,
            pipeline if pipeline is not None else self.pipeline,
            self.train[self.spec.features],
            dsn=self.dsn,
            interval_log_halfwidth=half_width,
            data_version="serving-test",
            metrics={"holdout_rmsle": 0.1},
        ).version

    def promote(self, version: str) -> None:
        promote(
            self.tracking_uri, self.settings.model_name, version, dsn=self.dsn, actor="serving-test",
            check=lambda _champion: Verdict(True, "serving test"),
        )


def split(spec: DatasetSpec, frame: pd.DataFrame, months: int = 12) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and holdout: the last ``months`` months of sales are held out."""
    month = frame["year_sold"] * 12 + frame["mo_sold"]
    holdout = month > month.max() - months
    return frame[~holdout].reset_index(drop=True), frame[holdout].reset_index(drop=True)


def fit_pipeline(spec: DatasetSpec, train: pd.DataFrame, trees: int = TREES, seed: int = 0) -> Any:
    pipeline = build_xgboost_pipeline(spec)
    pipeline.set_params(model__regressor__n_estimators=trees, model__regressor__random_state=seed)
    return pipeline.fit(train[spec.features], train[spec.target])


@pytest.fixture(scope="session")
def champion(settings: Settings, postgres, mlflow_server: str) -> Champion:
    spec = load_dataset(settings.dataset)
    train, holdout = split(spec, read_sample(spec))
    pipeline = fit_pipeline(spec, train)
    serving_settings = settings.model_copy(
        update={
            "model_name": f"serving-test-{uuid.uuid4().hex[:6]}",
            "mlflow_tracking_uri": mlflow_server,
            "auth_enabled": False,
            "model_poll_seconds": 0.5,
            "rate_limit_per_minute": 1_000_000,
        }
    )
    found = Champion(serving_settings, spec, pipeline, train, holdout, mlflow_server, postgres.dsn())
    version = found.register()
    found.promote(version)
    return dataclasses.replace(found, version=version)


def records(spec: DatasetSpec, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as JSON-ready API records (NaN as null, numpy scalars as Python ones)."""
    rows = frame[spec.features].astype(object).where(frame[spec.features].notna(), None)
    out = []
    for row in rows.to_dict(orient="records"):
        out.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return out


def wait_ready(client: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Poll ``/ready`` until it answers 200; return its body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return response.json()
        time.sleep(0.2)
    raise TimeoutError("the API did not become ready")


# --- server processes and load ------------------------------------------------------------


def add_versions(found: Champion, count: int) -> list[str]:
    """Register ``count`` more versions of the champion's files (same artifacts, new registry entries and digests)."""
    from price_platform.registry import tracking
    from price_platform.registry.integrity import record_digests, recorded_digests

    client = tracking.client(found.tracking_uri)
    name = found.settings.model_name
    template = client.get_model_version(name, "1")
    versions = []
    for _ in range(count):
        created = client.create_model_version(
            name, source=template.source, run_id=template.run_id, model_id=template.source.rsplit("/", 1)[-1]
        )
        for key, value in template.tags.items():
            client.set_model_version_tag(name, created.version, key, value)
        record_digests(found.dsn, name, str(created.version), recorded_digests(found.dsn, name, "1"))
        versions.append(str(created.version))
    return versions


def server_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """Environment that makes ``price-platform serve`` use ``settings`` (plus ``overrides``)."""
    import os

    values = {
        "home": settings.home, "database_url": settings.database_url, "database_name": settings.database_name,
        "mlflow_tracking_uri": settings.mlflow_tracking_uri, "model_name": settings.model_name,
        "auth_enabled": settings.auth_enabled, "redis_url": settings.redis_url,
        "model_poll_seconds": settings.model_poll_seconds, "rate_limit_per_minute": settings.rate_limit_per_minute,
        "drain_seconds": settings.drain_seconds, "dataset": settings.dataset, **overrides,
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRICE_PLATFORM_")}
    env.update({f"PRICE_PLATFORM_{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
                for key, value in values.items() if value is not None})
    env["OMP_NUM_THREADS"] = "1"
    return env


class Server:
    """``price-platform serve`` in a child process on a free port."""

    def __init__(self, env: dict[str, str], workers: int = 1, log_path: Any = None) -> None:
        import subprocess
        import sys
        from pathlib import Path

        from conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path or f"/tmp/serving-test-{self.port}.log")
        self._log = self.log_path.open("w")
        binary = Path(sys.executable).parent / "price-platform"
        self.process = subprocess.Popen(
            [str(binary), "serve", "--workers", str(workers), "--port", str(self.port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                response = httpx.get(f"{self.url}/ready", timeout=2)
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> int:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@dataclasses.dataclass
class Outcome:
    """One request of a load run."""

    client: int
    started: float
    finished: float
    status: int | None
    versions: list[str]
    error: str | None
    rows: int


def run_load(
    url: str,
    bodies: list[Any],
    *,
    clients: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    stop_when_not_ready: bool = False,
    on_tick: Any = None,
) -> list[Outcome]:
    """``clients`` concurrent loops posting ``bodies`` (round robin) to ``/predict`` for ``seconds``.

    With ``stop_when_not_ready`` a watcher polls ``/ready`` like a load balancer and the
    clients send no new request once it answers anything but 200.
    """
    import asyncio

    import httpx

    async def main() -> list[Outcome]:
        outcomes: list[Outcome] = []
        start = time.monotonic()
        deadline = start + seconds
        routable = asyncio.Event()
        routable.set()
        limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as http:

            async def watch() -> None:
                while time.monotonic() < deadline and routable.is_set():
                    try:
                        if (await http.get("/ready")).status_code != 200:
                            routable.clear()
                    except httpx.HTTPError:
                        routable.clear()
                    await asyncio.sleep(0.05)

            async def client(number: int) -> None:
                index = number
                while time.monotonic() < deadline and (routable.is_set() or not stop_when_not_ready):
                    body = bodies[index % len(bodies)]
                    index += clients
                    began = time.monotonic()
                    try:
                        response = await http.post("/predict", json=body)
                        payload = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
                        versions = [p["model_version"] for p in payload.get("predictions", [])]
                        outcomes.append(Outcome(number, began, time.monotonic(), response.status_code, versions, None,
                                                len(body) if isinstance(body, list) else 1))
                    except httpx.HTTPError as error:
                        outcomes.append(Outcome(number, began, time.monotonic(), None, [], repr(error), 0))
                        await asyncio.sleep(0.05)

            tasks = [asyncio.create_task(client(i)) for i in range(clients)]
            if stop_when_not_ready:
                tasks.append(asyncio.create_task(watch()))
            if on_tick is not None:
                tasks.append(asyncio.create_task(asyncio.to_thread(on_tick, start)))
            await asyncio.gather(*tasks)
        return outcomes

    return asyncio.run(main())
