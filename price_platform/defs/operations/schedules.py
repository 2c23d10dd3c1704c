"""The daily backup schedule."""

from __future__ import annotations

import dagster as dg

from price_platform.defs.operations.assets import BACKUP_JOB
from price_platform.settings import Settings


def build_daily_backup(settings: Settings) -> dg.ScheduleDefinition:
    """Backs up the platform every day at ``settings.backup_cron`` (UTC), keeping ``settings.backup_keep`` backups."""
    return dg.ScheduleDefinition(
        name="daily_backup",
        job=BACKUP_JOB,
        cron_schedule=settings.backup_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="A full backup (pg_dump of every database + artifacts) each day; older ones pruned.",
    )
