"""The operations domain's resource: where backups go, which artifacts (folder, bucket) they include, how many are kept."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from price_platform.operations.bucket import Bucket
from price_platform.settings import Settings, default


class Backups(dg.ConfigurableResource):
    """The backup folder, the artifact folder backed up with the databases, and how many backups to keep."""

    backup_dir: str
    artifact_dir: str
    keep: int = default("backup_keep")
    artifact_bucket_uri: str | None = None  # s3://bucket/prefix when MLflow keeps its artifacts in S3

    @classmethod
    def from_settings(cls, settings: Settings) -> Backups:
        return cls(
            backup_dir=str(settings.backups),
            artifact_dir=str(settings.artifacts),
            keep=settings.backup_keep,
            artifact_bucket_uri=settings.artifact_bucket_uri,
        )

    @property
    def bucket(self) -> Bucket | None:
        return Bucket.from_settings(self.artifact_bucket_uri)

    @property
    def folder(self) -> Path:
        return Path(self.backup_dir)

    @property
    def artifacts(self) -> Path:
        return Path(self.artifact_dir)
