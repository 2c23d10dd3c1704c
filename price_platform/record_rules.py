"""Cross-field rules of a data set (``rules`` in its YAML): comparisons every physically possible record satisfies.

Each column's range is checked on its own; a rule relates columns, e.g. ``length <= 10 * width``
(a dimension ten times the others is not a real object, however valid each value is). A rule
is two arithmetic expressions over numeric columns (the grammar of derived features) joined by
one of ``< <= > >=``. A record with a missing value in a rule is not held to it.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from price_platform.datasets import DatasetSpec
from price_platform.modeling import compile_expression

_COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: ``left <op> right`` over the record's numeric columns."""

    text: str
    left: Callable[[Any], Any]
    right: Callable[[Any], Any]
    compare: Callable[[Any, Any], Any]


def compile_rule(text: str) -> Rule:
    """The rule ``text``; ``ValueError`` saying what is wrong when it is not ``expression <op> expression``."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"rule {text!r} does not parse: {error.msg}") from None
    if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _COMPARISONS):
        raise ValueError(f"rule {text!r} must be one comparison (<, <=, > or >=) of two expressions")
    left, right = (compile_expression(ast.unparse(side)) for side in (tree.left, tree.comparators[0]))
    return Rule(text, left, right, _COMPARISONS[type(tree.ops[0])])


@lru_cache(maxsize=16)
def _rules(texts: tuple[str, ...]) -> tuple[Rule, ...]:
    return tuple(compile_rule(text) for text in texts)


def broken_rules(spec: DatasetSpec, rows: Sequence[tuple[Any, ...]]) -> list[tuple[int, str]]:
    """(record index, rule) of each record breaking one of the data set's rules (its first broken rule)."""
    rules = _rules(tuple(spec.rules))
    if not rules or not rows:
        return []
    columns = dict(zip(spec.features, zip(*rows, strict=True), strict=True))
    numeric = {name: np.array(columns[name], dtype=np.float64) for name in spec.numeric}  # None becomes NaN
    broken: dict[int, str] = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for rule in rules:
            left = np.broadcast_to(np.asarray(rule.left(numeric), dtype=np.float64), (len(rows),))
            right = np.broadcast_to(np.asarray(rule.right(numeric), dtype=np.float64), (len(rows),))
            fails = ~rule.compare(left, right) & ~np.isnan(left) & ~np.isnan(right)
            for index in np.flatnonzero(fails).tolist():
                broken.setdefault(index, rule.text)
    return sorted(broken.items())
