"""Run benchmark groups, print a table of figures and ratios, write ``benchmarks/results.json``.

``python -m benchmarks [GROUP ...]`` with groups ``training``, ``serving``, ``drift``, ``scale``
(default: all). Each group is a module of this package exposing ``run() -> list[Result]``.
Results of groups not run keep their previous figures in the JSON file.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

GROUPS = ("training", "serving", "drift", "scale", "rollout", "firstrun")
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str]) -> int:
    groups = argv or list(GROUPS)
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
        print(f"unknown benchmark group(s) {unknown}; choose from {list(GROUPS)}", file=sys.stderr)
        return 2
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    fresh = []
    for group in groups:
        module = importlib.import_module(f"benchmarks.{group}")
        print(f"== {group}", flush=True)
        fresh.extend(result.as_dict() for result in module.run())
    names = {result["name"] for result in fresh}
    merged = [result for result in previous if result["name"] not in names] + fresh
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    width = max((len(r["name"]) for r in merged), default=10)
    print(f"\n{'name':<{width}}  {'value':>12}  {'unit':<10} {'goal':<22} met")
    for r in merged:
        print(f"{r['name']:<{width}}  {r['value']:>12.4g}  {r['unit']:<10} {r['goal']:<22} {'yes' if r['met'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
