"""MLflow's artifacts in an S3 bucket (MinIO in docker-compose): copied into a backup and back.

The location is ``settings.artifact_bucket_uri`` (``s3://bucket/prefix``, the MLflow server's
``--artifacts-destination``); the endpoint is ``MLFLOW_S3_ENDPOINT_URL``, the variable the
MLflow server reads for the same bucket, and credentials come from boto3's usual sources
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse


class BucketError(RuntimeError):
    """The bucket could not be read or written, or holds objects where a restore needs none."""


@dataclass(frozen=True)
class Bucket:
    """An S3 prefix holding MLflow's artifacts."""

    name: str
    prefix: str  # without leading or trailing "/"; may be empty
    endpoint_url: str | None = None

    @classmethod
    def from_uri(cls, uri: str, endpoint_url: str | None = None) -> Bucket:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise BucketError(f"artifact store {uri!r} is not an s3://bucket/prefix URI")
        return cls(parsed.netloc, parsed.path.strip("/"), endpoint_url)

    @classmethod
    def from_settings(cls, uri: str | None) -> Bucket | None:
        """The bucket of ``settings.artifact_bucket_uri`` (``None`` when artifacts are a local folder)."""
        return None if not uri else cls.from_uri(uri, os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)

    @property
    def uri(self) -> str:
        return f"s3://{self.name}/{self.prefix}" if self.prefix else f"s3://{self.name}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url)

    def keys(self) -> list[str]:
        """Every object key under the prefix, relative to it."""
        start = f"{self.prefix}/" if self.prefix else ""
        found = []
        try:
            for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=start):
                found.extend(item["Key"][len(start):] for item in page.get("Contents", []))
        except Exception as error:  # noqa: BLE001 (botocore raises many types; all mean the same here)
            raise BucketError(f"cannot list {self.uri}: {error}") from error
        return sorted(found)

    def download(self, folder: Path) -> dict[str, dict[str, object]]:
        """Copy every object under the prefix into ``folder``; return {key: {bytes, sha256}}."""
        listed: dict[str, dict[str, object]] = {}
        client = self.client()
        for key in self.keys():
            target = folder / _safe(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(self.name, self._full(key), str(target))
            except Exception as error:  # noqa: BLE001
                raise BucketError(f"cannot download {self.uri}/{key}: {error}") from error
            listed[key] = {"bytes": target.stat().st_size, "sha256": _sha256(target)}
        return listed

    def upload(self, folder: Path, objects: dict[str, dict[str, object]]) -> None:
        """Put the listed objects of ``folder`` under the (empty) prefix, each checked against its sha256.

        Raises :class:`BucketError` before writing anything when the prefix holds objects or a file
        differs from the listing; if an upload fails, the objects written so far are deleted again.
        """
        if self.keys():
            raise BucketError(f"restore needs an empty artifact bucket; {self.uri} holds objects")
        for key, expected in objects.items():
            path = folder / _safe(key)
            if not path.is_file() or _sha256(path) != expected["sha256"]:
                raise BucketError(f"bucket object {key} of the backup is missing or does not match its checksum")
        client = self.client()
        written: list[str] = []
        try:
            for key in objects:
                client.upload_file(str(folder / _safe(key)), self.name, self._full(key))
                written.append(key)
        except BaseException as error:
            for key in written:
                client.delete_object(Bucket=self.name, Key=self._full(key))
            if isinstance(error, Exception):
                raise BucketError(f"cannot upload to {self.uri}: {error}") from error
            raise

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def _safe(key: str) -> PurePosixPath:
    """A key as a relative path that stays inside the folder (no ``..``, no absolute path)."""
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BucketError(f"refusing object key {key!r}: not a plain relative path")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
