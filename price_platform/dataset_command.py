"""``price-platform datasets``: draft a data set description from a table (``init``) and check one (``check``).

``init FILE [--output YAML] [--force]`` writes the draft of :mod:`price_platform.dataset_profile`
(never over an existing file without ``--force``; nothing when the file cannot be used or the
draft would not load), then checks it against the same file: any problem found (there should be
none) is printed and makes the exit code 1. ``check YAML [--file FILE]`` prints every problem of the
description, and of the file (by default its ``source.path``) against it, each with its YAML
line and field; exit code 1 when there is any, else 0 and one OK line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from price_platform.dataset_check import (
    Description,
    Problem,
    file_problems,
    read_description,
)
from price_platform.dataset_profile import default_output, profile, render
from price_platform.datasets import DatasetError, load_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="datasets_action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="profile a CSV/Parquet table and write a draft description to edit")
    init.add_argument("file", type=Path, help="the table: .csv, .csv.gz or .parquet")
    init.add_argument("--output", "-o", type=Path, help="where to write the YAML (default: next to FILE, FILE's name .yaml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing YAML")
    check = actions.add_parser("check", help="validate a description, and a file against it; print every problem")
    check.add_argument("yaml", type=Path, help="the data set description")
    check.add_argument("--file", type=Path, help="the table to check against it (default: the description's source.path)")


def run(args: argparse.Namespace) -> int:
    if args.datasets_action == "init":
        return init(args.file, args.output, force=args.force)
    return check(args.yaml, args.file)


def init(data_file: Path, output: Path | None = None, *, force: bool = False) -> int:
    """Write the draft description of ``data_file``; 1 (and nothing written) when it cannot be made."""
    output = output or default_output(data_file)
    if output.exists() and not force:
        print(f"{output} exists; not overwritten (give --force to replace it)", file=sys.stderr)
        return 1
    try:
        draft, _ = profile(data_file)
    except DatasetError as error:
        print(f"cannot draft a description: {error}", file=sys.stderr)
        return 1
    text = render(draft, data_file, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".yaml", dir=output.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        load_dataset(temporary)  # a draft that does not load is this command's bug: write nothing
        description = read_description(Path(temporary))
        problems, _ = file_problems(description, data_file)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    print(f"wrote {output}: target {draft.target}, {len(draft.numeric)} numeric and"
          f" {len(draft.categorical) + len(draft.one_hot)} categorical features,"
          f" time: {', '.join(f'{k} {v}' for k, v in draft.time.items()) or 'none'},"
          f" id: {draft.id_column or 'none'}; edit it, then run `price-platform datasets check {output}`")
    for problem in problems:
        print(problem.render(output), file=sys.stderr)
    return 1 if problems else 0


def check(yaml_path: Path, data_file: Path | None = None) -> int:
    """Print every problem of the description (and the file); 1 if any, else 0 with one OK line."""
    description = read_description(yaml_path)
    problems = list(description.problems)
    rows = 0
    spec = description.spec
    from_source = data_file is None
    data_file = data_file or (_source_path(description) if spec is not None else None)
    if spec is None and data_file is not None:
        problems.append(Problem(None, "file", f"{data_file} not checked: fix the description's problems above first"))
    elif spec is not None and data_file is not None:
        found, rows = file_problems(description, data_file, from_source=from_source)
        described = {problem.field for problem in problems}  # a column already at fault is not reported twice
        problems += [problem for problem in found if problem.field not in described]
    problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
    for problem in problems:
        print(problem.render(yaml_path))
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {yaml_path}", file=sys.stderr)
        return 1
    assert spec is not None
    against = f" and {data_file} ({rows} rows)" if data_file is not None else " (no file given, none in source.path)"
    time = spec.time.granularity if spec.time else "none"
    print(f"OK: {yaml_path}{against}: target {spec.target}, {len(spec.numeric)} numeric and {len(spec.categorical)}"
          f" categorical features, time: {time}, id: {spec.id_column or 'none'}")
    return 0


def _source_path(description: Description) -> Path | None:
    """The description's own file, relative paths from the YAML's folder (as :func:`load_dataset` reads them)."""
    assert description.spec is not None
    path = description.spec.source.path
    if path is None:
        return None
    return path if path.is_absolute() else (description.path.parent / path).resolve()
