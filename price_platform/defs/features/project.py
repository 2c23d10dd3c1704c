"""The dbt project under ``dbt/``: where it lives, its manifest, and the vars that describe the data set."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliResource, DbtProject

from price_platform.datasets import DatasetSpec, expression_sql

#: The dbt project folder at the top of the repository.
DBT_DIR = Path(__file__).resolve().parents[3] / "dbt"

_SOURCE_FOLDERS = ("models", "macros", "tests")


def dbt_executable() -> str:
    """The ``dbt`` command: on PATH, else the one installed beside this Python (a venv not activated)."""
    return shutil.which("dbt") or str(Path(sys.executable).with_name("dbt"))


def dbt_project() -> DbtProject:
    """The dbt project with an up-to-date ``manifest.json``: parsed when missing or older than its sources.

    This replaces ``DbtProject.prepare_if_dev()``: it also works outside ``dagster dev`` (a clean
    clone, the tests) and with a virtualenv that is not activated (dagster-dbt's own preparer
    looks for ``dbt`` on PATH only).
    """
    project = DbtProject(project_dir=DBT_DIR)
    if _manifest_is_stale(project):
        _parse(project)
    return project


def _parse(project: DbtProject) -> None:
    """``dbt parse`` into a folder of its own, then swap the manifest in (safe with concurrent loaders)."""
    scratch = project.target_path / f"parse-{uuid.uuid4().hex}"
    dbt = DbtCliResource(project_dir=project, dbt_executable=dbt_executable())
    dbt.cli(["parse", "--quiet"], target_path=scratch).wait()
    os.replace(project.project_dir / scratch / "manifest.json", project.manifest_path)
    shutil.rmtree(project.project_dir / scratch, ignore_errors=True)


def _manifest_is_stale(project: DbtProject) -> bool:
    if not project.manifest_path.exists():
        return True
    built = project.manifest_path.stat().st_mtime
    sources = [DBT_DIR / "dbt_project.yml"]
    for folder in _SOURCE_FOLDERS:
        sources.extend(path for path in (DBT_DIR / folder).rglob("*") if path.is_file())
    return any(path.stat().st_mtime > built for path in sources)


def dataset_vars(spec: DatasetSpec) -> dict[str, Any]:
    """The ``dataset`` var: everything the dbt models need to know about the data set's columns."""
    other_columns: dict[str, str] = {}
    if spec.id_column:
        other_columns[spec.id_column] = "text"
    if spec.time is not None:
        for column in spec.time.columns:
            if column not in spec.numeric:
                other_columns[column] = "text" if column == spec.time.column else "double precision"
    return {
        "target": spec.target,
        "target_min": spec.target_min,
        "id_column": spec.id_column,
        "time": None
        if spec.time is None
        else {
            "column": spec.time.column,
            "year_column": spec.time.year_column,
            "month_column": spec.time.month_column,
        },
        "numeric": list(spec.numeric),
        "categorical": list(spec.categorical),
        "other_columns": other_columns,
        "derived": {name: expression_sql(expression) for name, expression in spec.derived.items()},
        "segments": list(spec.segments),
        "area_column": spec.area_column,
    }


def description_hash(spec: DatasetSpec) -> str:
    """Hash of what dbt is told about the data set: it changes exactly when the features' shape may change."""
    text = json.dumps(dataset_vars(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_vars(spec: DatasetSpec, first_partition: str | None, last_partition: str | None) -> dict[str, Any]:
    """All vars of a ``dbt build``: the data set, its hash and the partition window (unset: every partition)."""
    return {
        "dataset": dataset_vars(spec),
        "dataset_hash": description_hash(spec),
        "min_partition": first_partition,
        "max_partition": last_partition,
    }
