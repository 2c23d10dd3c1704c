"""Interval health once prices come back: coverage and mean width per version and segment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd

from price_platform.datasets import DatasetSpec
from price_platform.monitoring import interval_health

SPEC = DatasetSpec.model_validate(
    {"name": "synthetic", "target": "price", "numeric": {"size": {}}, "categorical": {"area": {}},
     "segments": ["area"]}
)


def matched(rows: list[tuple[str, str, float, float, float]], days_ago: int = 0) -> pd.DataFrame:
    """(version, area, actual, lower, upper) rows as matched_predictions returns them."""
    created = datetime.now(UTC) - timedelta(days=days_ago)
    return pd.DataFrame([
        {"model_version": version, "week": None, "prediction": (lower + upper) / 2, "actual": actual,
         "source": "feedback", "created_at": created, "lower_bound": lower, "upper_bound": upper,
         "features": json.dumps({"size": 1.0, "area": area})}
        for version, area, actual, lower, upper in rows
    ])


def test_coverage_and_width_per_segment_with_small_groups_and_old_rows_left_out():
    inside = [("3", "north", 100.0, 90.0, 110.0)] * 18 + [("3", "north", 150.0, 90.0, 110.0)] * 2
    outside = [("3", "south", 100.0, 90.0, 130.0)] * 10 + [("3", "south", 50.0, 90.0, 130.0)] * 10
    few = [("3", "east", 100.0, 90.0, 110.0)] * 5
    old = matched([("3", "north", 500.0, 90.0, 110.0)] * 30, days_ago=interval_health.WINDOW_DAYS + 5)
    health = interval_health.measure(pd.concat([matched(inside + outside + few), old]), SPEC)
    table = health.set_index(health["segment"].fillna("all"))
    assert set(table.index) == {"all", "area=north", "area=south"}
    assert table.loc["area=north", "coverage"] == 0.9 and table.loc["area=north", "mean_width"] == 20.0
    assert table.loc["area=south", "coverage"] == 0.5 and table.loc["area=south", "mean_width"] == 40.0
    assert table.loc["all", "rows"] == 45
    assert interval_health.below_nominal(health, 0.9) == 2  # south and the whole (33/45)
    assert "| 3 | area=south | 20 | 50.0% **low** |" in interval_health.markdown(health, 0.9)


def test_predictions_without_intervals_give_an_empty_table():
    frame = matched([("3", "north", 100.0, 90.0, 110.0)] * 30).assign(lower_bound=None, upper_bound=None)
    health = interval_health.measure(frame, SPEC)
    assert health.empty and interval_health.markdown(health, 0.9) == "no priced predictions with intervals yet"
