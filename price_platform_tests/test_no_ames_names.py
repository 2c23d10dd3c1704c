"""No Ames column name outside its YAML, tests and docs: everything else is driven by the data set description."""

from __future__ import annotations

import re
import subprocess

from price_platform.datasets import load_dataset
from price_platform.settings import DEFAULT_DATASET, PACKAGE_DIR

ROOT = PACKAGE_DIR.parent
#: Folders whose code must not know the Ames columns.
CODE_FOLDERS = ("price_platform", "serving", "dbt", "grafana", "deploy")
#: Ames column names that are also plain English words other code may well use.
ENGLISH_WORDS = {
    "street", "utilities", "heating", "electrical", "functional", "fence", "alley", "foundation",
    "latitude", "longitude", "fireplaces",
}


def ames_names() -> set[str]:
    spec = load_dataset(DEFAULT_DATASET)
    return (set(spec.columns) | set(spec.derived)) - ENGLISH_WORDS


def code_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", *CODE_FOLDERS], cwd=ROOT, capture_output=True, text=True, check=True)
    return [
        name for name in listed.stdout.split()
        if not name.startswith("price_platform/datasets/") and not name.endswith((".md", ".gz", ".parquet", ".png"))
        and not name.startswith("price_platform/data/")
        and not name.endswith("_test.yml")  # promtool rule tests are tests
    ]  # fmt: skip


def test_the_names_are_searched_for_and_found_in_the_yaml() -> None:
    names = ames_names()
    assert {"gr_liv_area", "sale_price", "neighborhood", "mo_sold"} <= names
    yaml_text = DEFAULT_DATASET.read_text()
    assert all(re.search(rf"\b{name}\b", yaml_text) for name in names)


def test_no_ames_column_name_in_the_code() -> None:
    pattern = re.compile(r"\b(" + "|".join(sorted(ames_names())) + r")\b")
    offenders = {}
    for name in code_files():
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        found = sorted(set(pattern.findall(text)))
        if found:
            offenders[name] = found
    assert not offenders, f"Ames column names outside the YAML, tests and docs: {offenders}"
