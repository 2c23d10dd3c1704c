"""The Great Expectations suite a data set's records must meet, derived from its description."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from price_platform.datasets import DatasetSpec

#: pandas dtypes a column of each kind may have.
TYPE_LISTS = {"number": ["float64", "float32", "int64", "int32", "Float64", "Int64"], "text": ["object", "string", "str"]}


def build_suite(spec: DatasetSpec) -> gx.ExpectationSuite:
    """Columns and types, ranges, allowed categories, nulls, duplicate ids and target > target_min."""
    found: list[gxe.Expectation] = []
    kinds = spec.column_kinds
    found.append(gxe.ExpectTableColumnsToMatchSet(column_set=list(kinds), exact_match=False))
    for column, kind in kinds.items():
        found.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=TYPE_LISTS[kind]))
    required = [spec.target, *([spec.id_column] if spec.id_column else [])]
    required += [name for name, rule in {**spec.numeric, **spec.categorical}.items() if not rule.nullable]
    for column in required:
        found.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for column, rule in spec.numeric.items():
        if rule.min is not None or rule.max is not None:
            found.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=rule.min, max_value=rule.max))
    for column, rule in spec.categorical.items():
        if rule.allowed is not None:
            allowed = sorted({value.strip() for value in rule.allowed})
            found.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=allowed))
    if spec.id_column:
        found.append(gxe.ExpectColumnValuesToBeUnique(column=spec.id_column))
    found.append(gxe.ExpectColumnValuesToBeBetween(column=spec.target, min_value=spec.target_min, strict_min=True))
    return gx.ExpectationSuite(name=f"{spec.name}_records", expectations=found)
