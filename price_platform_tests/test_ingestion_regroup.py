"""Renamed source columns and one-hot groups folded back into one categorical, on ingestion."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from price_platform.datasets import DatasetError, load_dataset
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.records import typed_records
from price_platform.ingestion.sources import SourceFrame

HOUSES_YAML = """\
name: houses
target: price
rename: {sqft_living: area}
one_hot:
  furnishing: [furnished, semi_furnished, unfurnished]
numeric:
  area: {min: 0}
categorical:
  furnishing: {allowed: [furnished, semi_furnished, unfurnished], nullable: true}
"""


def source(frame: pd.DataFrame) -> SourceFrame:
    return SourceFrame(kind="landing", name="houses.csv", frame=frame)


def test_renames_and_one_hot_groups_become_the_descriptions_columns(tmp_path: Path) -> None:
    (tmp_path / "houses.yaml").write_text(HOUSES_YAML)
    spec = load_dataset(tmp_path / "houses.yaml")
    frame = pd.DataFrame(
        {"sqft_living": [50, 70, 90], "furnished": [1, 0, 0], "semi_furnished": [0, 0, 0],
         "unfurnished": [0, 0, 1], "price": [1.0, 2.0, 3.0]}
    )  # fmt: skip
    records = typed_records(spec, source(frame), "batch-1")
    assert records.area.tolist() == [50.0, 70.0, 90.0]
    assert records.furnishing.tolist() == ["furnished", None, "unfurnished"]
    both = frame.assign(semi_furnished=[1, 0, 0])
    with pytest.raises(IngestionError, match="one-hot group 'furnishing': more than one of .* rows 1"):
        typed_records(spec, source(both), "batch-1")
    with pytest.raises(IngestionError, match=r"misses columns \['unfurnished'\]"):
        typed_records(spec, source(frame.drop(columns="unfurnished")), "batch-1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("rename: {sqft_living: area}", "rename: {sqft_living: size}"), "rename: targets ['size']"),
        (("  furnishing: [furnished,", "  furnish: [furnished,"), "one_hot: 'furnish' is not a categorical"),
    ],
)
def test_bad_renames_and_groups_are_refused(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    (tmp_path / "bad.yaml").write_text(HOUSES_YAML.replace(*change))
    with pytest.raises(DatasetError) as raised:
        load_dataset(tmp_path / "bad.yaml")
    assert message in str(raised.value)
