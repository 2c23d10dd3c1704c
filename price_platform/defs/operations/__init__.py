"""Operations domain: the daily backup of databases and artifacts, and the executor heavy steps share."""

from __future__ import annotations

import dagster as dg

from price_platform.settings import Settings

#: With ``executor=multiprocess``, steps run as separate processes, at most this many at once;
#: heavy steps also take a slot of their concurrency pool (``dagster.yaml`` → ``concurrency.pools``),
#: so two trainings or a training and a bulk load never run side by side on a small machine.
MAX_CONCURRENT_STEPS = 2


def run_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The platform's executor: in-process by default; one process per step when configured."""
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": MAX_CONCURRENT_STEPS})
    return dg.in_process_executor


def build_definitions(settings: Settings) -> dg.Definitions:
    """The backup asset, its daily schedule, the backup resource and the platform's run executor."""
    from price_platform.defs.operations.assets import BACKUP_JOB, platform_backup
    from price_platform.defs.operations.resources import Backups
    from price_platform.defs.operations.schedules import build_daily_backup

    return dg.Definitions(
        assets=[platform_backup],
        jobs=[BACKUP_JOB],
        schedules=[build_daily_backup(settings)],
        resources={"backups": Backups.from_settings(settings)},
        executor=run_executor(settings),
    )
