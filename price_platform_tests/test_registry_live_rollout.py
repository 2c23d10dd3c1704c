"""``production_model`` with ``rollout_after_retrain``: a retrain's challenger is left to the live rollout.

The asset runs only after the blocking gate passed (``challenger_beats_champion``). With a champion
in place and ``live_rollout`` on, it must not touch the registry: the challenger stays
``challenger`` for shadow, canary and the sequential gate. The registry and the platform database
here are ports nobody listens on, so a promotion attempt fails the call; the first model (no
champion) and a retrain without ``live_rollout`` are still promoted, which is what makes them reach
for the database (the deployments row) and the registry.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from price_platform.defs.registry.assets import production_model
from price_platform.defs.registry.resources import ModelRegistry
from price_platform.defs.resources import Warehouse
from price_platform.testing import free_port
from price_platform.training.evaluation import Evaluation

NOBODY = f"http://127.0.0.1:{free_port()}"


def evaluation(champion_version: str | None) -> Evaluation:
    return Evaluation(
        challenger_version="2",
        champion_version=champion_version,
        challenger={"rmsle": 0.12},
        champion=None if champion_version is None else {"rmsle": 0.14},
        segments=pd.DataFrame(),
    )


def materialize(champion_version: str | None, live_rollout: bool) -> dg.MaterializeResult:
    return production_model(
        context=dg.build_asset_context(),
        model_evaluation=evaluation(champion_version),
        registry=ModelRegistry(tracking_uri=NOBODY, model_name="live-rollout-test", live_rollout=live_rollout),
        warehouse=Warehouse(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"),
    )


@pytest.fixture(autouse=True)
def _no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_a_retrained_challenger_is_left_for_the_live_rollout_without_touching_the_registry() -> None:
    result = materialize("1", live_rollout=True)

    assert result.metadata["champion_version"] == "1"
    assert result.metadata["challenger_version"] == "2"
    assert result.metadata["reason"] == "beats the champion on the holdout; left as challenger for the live rollout"
    assert result.metadata["holdout_rmsle"] == 0.12


@pytest.mark.parametrize(("champion_version", "live_rollout"), [(None, True), ("1", False)])
def test_the_first_model_and_a_plain_retrain_go_on_to_promotion(
    champion_version: str | None, live_rollout: bool
) -> None:
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        materialize(champion_version, live_rollout)
