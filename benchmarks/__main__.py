"""Run benchmark groups, print a table of figures and ratios, write ``benchmarks/results.json``.

``python -m benchmarks [GROUP ...]`` with the groups of :data:`GROUPS` (default: all). A group is one
or more modules of this package, each exposing ``run() -> list[Result]``. Results of groups not run
keep their previous figures in the JSON file; each module's figures are merged into it as soon as
the module ends (re-reading the file then), so that benches run side by side keep each other's.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Group name -> the modules it runs, in order.
GROUPS: dict[str, tuple[str, ...]] = {
    "training": ("training",),
    "serving": ("serving", "serving_compilers", "serving_shadow"),
    "drift": ("drift",),
    "scale": ("scale",),
    "rollout": ("rollout",),
    "firstrun": ("firstrun",),
    "datasets": ("datasets",),
}
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str]) -> int:
    """Run the named groups (or single modules of a group, such as ``serving_shadow``); all groups by default."""
    modules = {name for names in GROUPS.values() for name in names}
    chosen = argv or list(GROUPS)
    unknown = [name for name in chosen if name not in GROUPS and name not in modules]
    if unknown:
        print(f"unknown benchmark group(s) {unknown}; choose from {list(GROUPS)}", file=sys.stderr)
        return 2
    merged: list[dict] = []
    for choice in chosen:
        print(f"== {choice}", flush=True)
        for name in GROUPS.get(choice, (choice,)):
            module = importlib.import_module(f"benchmarks.{name}")
            merged = record([result.as_dict() for result in module.run()])
    width = max((len(r["name"]) for r in merged), default=10)
    print(f"\n{'name':<{width}}  {'value':>12}  {'unit':<10} {'goal':<22} met")
    for r in merged:
        print(f"{r['name']:<{width}}  {r['value']:>12.4g}  {r['unit']:<10} {r['goal']:<22} {'yes' if r['met'] else 'NO'}")
    return 0


def record(fresh: list[dict]) -> list[dict]:
    """Merge ``fresh`` figures into the results file (replacing those of the same names); return all of them."""
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    names = {result["name"] for result in fresh}
    merged = [result for result in previous if result["name"] not in names] + fresh
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
