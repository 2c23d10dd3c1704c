"""Fixtures of the serving tests: a small champion registered on a real MLflow server, and app helpers."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Champion:
    """A registered model with alias ``champion``, its training pieces and serving settings."""

    settings: Settings
    spec: DatasetSpec
    pipeline: Any
    train: pd.DataFrame
    holdout: pd.DataFrame
    tracking_uri: str
    dsn: str

    def register(self, *, pipeline: Any | None = None, half_width: float = HALF_WIDTH) -> str:
        """Register another version (not promoted); return its number."""
        return register_candidate(
            self.tracking_uri,
            self.settings.model_name,
            pipeline if pipeline is not None else self.pipeline,
            self.train[self.spec.features],
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
    found.promote(found.register())
    return found


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
