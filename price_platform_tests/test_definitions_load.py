"""The code location loads as ``dagster dev`` loads it: every job, asset and check resolves together.

``build_definitions`` alone does not build the repository's jobs; a name shared by a job and an
asset (each making a graph of that name) only fails when Dagster loads the whole repository,
which is what ``make up`` does first.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from price_platform.definitions import build_definitions
from price_platform.settings import DEFAULT_DATASET, Settings
from price_platform_tests.test_ingestion_arrivals import CARS_YAML


@pytest.mark.parametrize("table", ["bundled", "without_time"])
def test_the_definitions_are_loadable(table: str, tmp_path: Path) -> None:
    dataset = DEFAULT_DATASET
    if table == "without_time":
        dataset = tmp_path / "used_cars.yaml"
        dataset.write_text(CARS_YAML)
        (tmp_path / "cars.csv").write_text("")
    defs = build_definitions(Settings(home=tmp_path, dataset=dataset))
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert repository.get_all_jobs()
