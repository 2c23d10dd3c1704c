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


def test_importing_the_code_location_builds_nothing_until_dagster_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``definitions.py`` holds one ``@dg.definitions`` function, which is what Dagster's loader finds."""
    from dagster._core.workspace.autodiscovery import loadable_targets_from_loaded_module

    import price_platform.definitions as code_location
    from price_platform.settings import get_settings

    assert not any(isinstance(value, dg.Definitions) for value in vars(code_location).values())
    (target,) = loadable_targets_from_loaded_module(code_location)
    assert target.attribute == "defs"
    monkeypatch.setenv("PRICE_PLATFORM_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert code_location.defs().resolve_asset_graph().get_all_asset_keys()
    finally:
        get_settings.cache_clear()
