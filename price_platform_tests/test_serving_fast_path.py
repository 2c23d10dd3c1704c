"""The compiled inference path agrees with ``pipeline.predict``; other models fall back; bad versions are refused."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from test_serving_support import Champion, add_versions, champion  # noqa: F401 (fixture)

from price_platform.modeling import build_ridge_baseline
from price_platform.registry import tracking
from serving import metrics
from serving.fast_path import CompiledPipeline, NotCompilable, PipelinePredictor, build_predictor, compile_pipeline
from serving.model_store import ModelStore
from serving.schemas import build_schemas


def rows_of(champion: Champion, frame) -> list[tuple]:
    features = champion.spec.features
    return list(frame[features].astype(object).where(frame[features].notna(), None).itertuples(index=False, name=None))


def test_compiled_path_agrees_with_the_pipeline_on_the_whole_holdout(champion: Champion) -> None:
    compiled = compile_pipeline(champion.pipeline, champion.spec.features)
    expected = champion.pipeline.predict(champion.holdout[champion.spec.features])
    rows = rows_of(champion, champion.holdout)
    batch = compiled.predict(rows)
    one_by_one = np.array([compiled.predict([row])[0] for row in rows])
    assert len(rows) == len(champion.holdout) > 100
    assert np.max(np.abs(batch - expected) / expected) < 1e-6
    assert np.max(np.abs(one_by_one - expected) / expected) < 1e-6


def test_compiled_path_agrees_on_missing_and_unseen_values(champion: Champion) -> None:
    frame = champion.holdout.head(40).copy()
    frame.loc[frame.index[:10], "mas_vnr_type"] = None
    frame.loc[frame.index[10:20], "neighborhood"] = "Never_Seen_Before"
    frame.loc[frame.index[20:30], "lot_frontage"] = np.nan
    compiled = compile_pipeline(champion.pipeline, champion.spec.features)
    expected = champion.pipeline.predict(frame[champion.spec.features])
    rows = rows_of(champion, frame)
    assert np.max(np.abs(compiled.predict(rows) - expected) / expected) < 1e-6
    assert np.max(np.abs(np.array([compiled.predict([r])[0] for r in rows]) - expected) / expected) < 1e-6


def test_other_pipelines_are_served_by_the_pipeline_itself(champion: Champion) -> None:
    ridge = build_ridge_baseline(champion.spec).fit(champion.train[champion.spec.features], champion.train[champion.spec.target])
    with pytest.raises(NotCompilable, match="Ridge|StandardScaler"):
        compile_pipeline(ridge, champion.spec.features)
    predictor = build_predictor(ridge, champion.spec.features)
    assert isinstance(predictor, PipelinePredictor) and not predictor.fast
    rows = rows_of(champion, champion.holdout.head(25))
    np.testing.assert_allclose(predictor.predict(rows), ridge.predict(champion.holdout.head(25)[champion.spec.features]))
    assert isinstance(build_predictor(champion.pipeline, champion.spec.features), CompiledPipeline)


def test_a_version_that_fails_its_checks_is_refused_and_the_old_one_serves(champion: Champion) -> None:
    settings = champion.settings.model_copy(update={"model_name": f"refusal-{uuid.uuid4().hex[:6]}"})
    own = Champion(settings, champion.spec, champion.pipeline, champion.train, champion.holdout, champion.tracking_uri, champion.dsn)
    own.promote(own.register())
    [bad] = add_versions(own, 1)
    tracking.client(champion.tracking_uri).set_model_version_tag(settings.model_name, bad, "interval_log_halfwidth", "nan")
    store = ModelStore(settings=settings, spec=champion.spec, record_type=build_schemas(champion.spec, 10).record, dsn=champion.dsn)
    refused = metrics.MODEL_LOADS.labels(outcome="refused")

    async def scenario() -> tuple[str, str, float, float]:
        first = await store.refresh("test start")
        before = refused._value.get()
        own.promote(bad)
        await store.refresh("test promotion")
        return first.version, store.current.version, before, refused._value.get()

    first, serving, before, after = asyncio.run(scenario())
    assert first == "1" and serving == "1"
    assert after == before + 1
