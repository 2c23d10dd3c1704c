"""The dbt graph Dagster reads knows every model's inputs, whatever the data set description says.

Dagster's manifest is parsed without the ``dataset`` var, so a ``ref`` rendered only for some
data sets (inside an ``if``) would be missing from its graph, and a backfill would start that
model as a root, in a run of its own, before its inputs exist (issue 24, item 1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg

from price_platform.datasets import load_dataset
from price_platform.defs.features.assets import build_dbt_assets
from price_platform.defs.features.project import DBT_DIR, dbt_project
from price_platform_tests.test_ingestion_arrivals import CARS_YAML

REF = re.compile(r"""ref\(\s*['"](\w+)['"]\s*\)""")


def test_every_ref_written_in_a_model_is_an_edge_of_the_parsed_manifest() -> None:
    manifest = json.loads(dbt_project().manifest_path.read_text())
    checked = 0
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model":
            continue
        written = set(REF.findall((DBT_DIR / node["original_file_path"]).read_text()))
        parsed = {parent.split(".")[-1] for parent in node["depends_on"]["nodes"]}
        assert written <= parsed, f"{node['name']}: refs {sorted(written - parsed)} missing from the manifest"
        checked += 1
    assert checked >= 5


def test_the_only_root_of_the_dbt_assets_is_staging_on_raw_sales(tmp_path: Path) -> None:
    """A table without time: every dbt model waits for raw_sales, through staging."""
    (tmp_path / "used_cars.yaml").write_text(CARS_YAML)
    assets = build_dbt_assets(load_dataset(tmp_path / "used_cars.yaml"), dbt_project())
    own = set(assets.keys)
    roots = {key for key in own if not (assets.asset_deps[key] & own)}
    assert roots == {dg.AssetKey("stg_price_data__sales")}
    assert assets.asset_deps[dg.AssetKey("stg_price_data__sales")] == {dg.AssetKey("raw_sales")}
    assert assets.asset_deps[dg.AssetKey("int_sales_unpivoted_by_segment")] == {dg.AssetKey("int_sales_enriched")}
