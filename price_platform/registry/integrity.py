"""Integrity of model artifacts: the SHA-256 of every file, recorded at registration, checked before loading.

The digests live in PostgreSQL (``model_registry.artifact_digests``), not beside the files:
someone who can write the MLflow artifact store cannot also make a changed file match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from price_platform.warehouse import connect

#: Written by MLflow into every ``models:/`` download (name and version): not part of the artifact.
_DOWNLOAD_ONLY = frozenset({"registered_model_meta"})
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """A model artifact whose files are not the ones recorded at registration (or have no record)."""


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size_bytes: int


def file_digests(folder: Path) -> dict[str, FileDigest]:
    """SHA-256 and size of every file under ``folder``, by ``/``-separated relative path."""
    found: dict[str, FileDigest] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_dir() or relative in _DOWNLOAD_ONLY:
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        found[relative] = FileDigest(digest.hexdigest(), path.stat().st_size)
    return found


def record_digests(dsn: str, model_name: str, version: str, digests: Mapping[str, FileDigest]) -> None:
    """Store the digests of a newly registered version (a version is recorded once)."""
    if not digests:
        raise IntegrityError(f"{model_name} version {version}: the artifact has no files to record")
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.executemany(
            "insert into model_registry.artifact_digests (model_name, version, path, sha256, size_bytes)"
            " values (%s, %s, %s, %s, %s)",
            [(model_name, version, path, d.sha256, d.size_bytes) for path, d in digests.items()],
        )


def recorded_digests(dsn: str, model_name: str, version: str) -> dict[str, FileDigest]:
    """The digests recorded for one version (empty when none were)."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select path, sha256, size_bytes from model_registry.artifact_digests where model_name = %s and version = %s",
            (model_name, version),
        )
        return {path: FileDigest(sha256, size) for path, sha256, size in cursor.fetchall()}


def verify(dsn: str, model_name: str, version: str, folder: Path) -> None:
    """Raise :class:`IntegrityError` unless ``folder`` holds exactly the files recorded for the version.

    The message names every changed, missing and unexpected file.
    """
    expected = recorded_digests(dsn, model_name, version)
    if not expected:
        raise IntegrityError(
            f"{model_name} version {version} has no recorded artifact digests (registered before integrity"
            " records, or not by register_candidate): retrain it or re-register it"
        )
    actual = file_digests(folder)
    changed = sorted(path for path in expected.keys() & actual.keys() if expected[path] != actual[path])
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    if changed or missing or extra:
        parts = [f"{label}: {', '.join(paths)}" for label, paths in
                 (("changed", changed), ("missing", missing), ("unexpected", extra)) if paths]
        raise IntegrityError(
            f"{model_name} version {version}: artifact does not match the digests recorded at registration ({'; '.join(parts)})"
        )


#: ``model_registry.audit_log.action`` of a version refused because its artifact failed a check.
AUDIT_ACTION = "model_artifact_refused"


def audit_refusal(dsn: str, *, actor: str, model_name: str, version: str, where: str, error: Exception) -> None:
    """Write a refused artifact (integrity or format) to ``model_registry.audit_log``."""
    detail = {"model_name": model_name, "version": version, "where": where, "error": str(error), "kind": type(error).__name__}
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "insert into model_registry.audit_log (actor, action, detail) values (%s, %s, %s)",
            (actor, AUDIT_ACTION, json.dumps(detail)),
        )
