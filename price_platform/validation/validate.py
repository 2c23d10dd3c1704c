"""Running the data set's suite on a set of records: which expectations hold, and why each bad row is bad."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from price_platform.datasets import DatasetSpec
from price_platform.validation.suite import build_suite

#: Rules Great Expectations cannot state per row, checked beside the suite.
WHOLE_NUMBER = "expect_column_values_to_be_whole_numbers"


@dataclass
class Validation:
    """The outcome of validating records: per-expectation results and per-row reasons.

    ``flagged`` holds, per (expectation, column), the ids of the rows it flagged; an expectation
    that failed for the records as a whole (no row to blame) has no entry.
    """

    success: bool
    results: list[dict[str, object]]
    reasons: dict[int, list[str]] = field(default_factory=dict)
    flagged: dict[tuple[str, str | None], list[object]] = field(default_factory=dict)

    def restricted_to(self, row_ids: Collection[object]) -> Validation:
        """This outcome as if only the rows ``row_ids`` had been validated.

        Lets one suite run over many partitions give each partition its own outcome: a
        row-level expectation counts the rows it flagged among them; one that failed for the
        records as a whole fails for every part of them too.
        """
        keep = set(row_ids)
        results = []
        flagged = {}
        for result in self.results:
            key = (result["expectation"], result["column"])
            if key not in self.flagged:
                results.append(result)
                continue
            flagged[key] = [row for row in self.flagged[key] if row in keep]
            results.append({**result, "success": not flagged[key], "unexpected": len(flagged[key])})
        reasons = {row: why for row, why in self.reasons.items() if row in keep}
        success = all(result["success"] for result in results)
        return Validation(success=success, results=results, reasons=reasons, flagged=flagged)

    @property
    def failed(self) -> list[dict[str, object]]:
        return [result for result in self.results if not result["success"]]

    def markdown(self) -> str:
        """The failed expectations as a markdown table (empty when all hold)."""
        if not self.failed:
            return ""
        lines = ["| expectation | column | unexpected |", "|---|---|---|"]
        lines += [f"| {r['expectation']} | {r['column']} | {r['unexpected']} |" for r in self.failed]
        return "\n".join(lines)


def validate_records(spec: DatasetSpec, records: pd.DataFrame, row_ids: pd.Series | None = None) -> Validation:
    """Validate records against the spec's suite; reasons are keyed by ``row_ids`` (default: the frame's index).

    Of rows sharing an id, the first is kept and the later ones get a reason.
    """
    frame = records.reset_index(drop=True)
    ids = list(row_ids if row_ids is not None else records.index)
    batch = _batch(frame)
    # A quick pass says which expectations fail; only those are run again for their rows,
    # which halves the cost on the common, clean partition.
    quick = batch.validate(build_suite(spec), result_format={"result_format": "BOOLEAN_ONLY"})
    failing = [result.expectation_config.to_domain_obj() for result in quick.results if not result.success]
    details = {}
    if failing:
        retry = gx.ExpectationSuite(name=f"{spec.name}_failing", expectations=failing)
        details = {
            (r.expectation_config.type, r.expectation_config.kwargs.get("column")): r
            for r in batch.validate(retry, result_format={"result_format": "COMPLETE"}).results
        }
    results: list[dict[str, object]] = []
    reasons: dict[int, list[str]] = defaultdict(list)
    flagged: dict[tuple[str, str | None], list[object]] = {}
    for summary in quick.results:
        config = summary.expectation_config
        column = config.kwargs.get("column")
        result = details.get((config.type, column), summary)
        unexpected = result.result.get("unexpected_index_list") or []
        values = result.result.get("unexpected_list") or []
        results.append(
            {
                "expectation": config.type,
                "column": column,
                "success": bool(summary.success),
                "unexpected": result.result.get("unexpected_count", 0 if summary.success else "table"),
            }
        )
        if config.type == "expect_column_values_to_be_unique":
            unexpected, values = _later_duplicates(unexpected, values)
        if summary.success or "unexpected_index_list" in result.result:
            flagged[(config.type, column)] = [ids[index] for index in unexpected]
        for index, value in zip(unexpected, values, strict=True):
            reasons[ids[index]].append(_reason(spec, config.type, config.kwargs, column, value))
    whole = _whole_number_reasons(spec, frame)
    for index, reason in whole:
        reasons[ids[index]].append(reason)
    results.append(
        {"expectation": WHOLE_NUMBER, "column": "*", "success": not whole, "unexpected": len(whole)}
    )
    flagged[(WHOLE_NUMBER, "*")] = [ids[index] for index, _ in whole]
    return Validation(
        success=bool(quick.success) and not whole, results=results, reasons=dict(reasons), flagged=flagged
    )


def _batch(frame: pd.DataFrame) -> gx.datasource.fluent.interfaces.Batch:
    """The frame as a Great Expectations batch in a throwaway in-memory context."""
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    return (
        context.data_sources.add_pandas("records")
        .add_dataframe_asset("records")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )


def _later_duplicates(indexes: list[int], values: list[object]) -> tuple[list[int], list[object]]:
    seen: set[object] = set()
    later: list[tuple[int, object]] = []
    for index, value in sorted(zip(indexes, values, strict=True), key=lambda pair: pair[0]):
        if value in seen:
            later.append((index, value))
        seen.add(value)
    return [index for index, _ in later], [value for _, value in later]


def _reason(spec: DatasetSpec, kind: str, kwargs: dict, column: str | None, value: object) -> str:
    value = value.item() if hasattr(value, "item") else value  # numpy scalars read as plain numbers
    if kind == "expect_column_values_to_not_be_null":
        return f"{column}: missing"
    if kind == "expect_column_values_to_be_in_set":
        return f"{column}: {value!r} is not an allowed category"
    if kind == "expect_column_values_to_be_unique":
        return f"{column}: duplicate id {value!r}"
    if kind == "expect_column_values_to_be_between" and kwargs.get("strict_min"):
        return f"{column}: {value!r} is not greater than {spec.target_min:g}"
    if kind == "expect_column_values_to_be_between":
        return f"{column}: {value!r} is outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    return f"{column}: {value!r} fails {kind}"


def _whole_number_reasons(spec: DatasetSpec, frame: pd.DataFrame) -> list[tuple[int, str]]:
    found = []
    for column, rule in spec.numeric.items():
        if not rule.integer or column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.notna() & values.map(lambda v: math.isfinite(v) and v % 1 != 0)
        found += [(index, f"{column}: {float(values[index])!r} is not a whole number") for index in bad[bad].index]
    return found
