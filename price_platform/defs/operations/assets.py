"""The backup as an asset: each materialisation is one complete, checksummed backup."""

import time

import dagster as dg

from price_platform.defs.operations.resources import Backups
from price_platform.defs.resources import Warehouse
from price_platform.operations.backup import BackupManifest, backup, prune


@dg.asset(group_name="operations", pool="backup", kinds={"postgres"})
def platform_backup(context: dg.AssetExecutionContext, warehouse: Warehouse, backups: Backups) -> dg.MaterializeResult:
    """A restorable copy of every platform database, the artifact folder and bucket (`price-platform restore`)."""
    started = time.perf_counter()
    folder = backup(warehouse.server, backups.artifacts, backups.folder, bucket=backups.bucket)
    manifest = BackupManifest.read(folder)
    removed = prune(backups.folder, backups.keep)
    rows = "\n".join(f"| {name} | {entry['bytes']:,} |" for name, entry in manifest.files.items())
    context.log.info("backup written to %s; %d old backups removed", folder, len(removed))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "bytes": sum(int(entry["bytes"]) for entry in manifest.files.values()),
            "seconds": round(time.perf_counter() - started, 1),
            "server_version": manifest.server_version,
            "files": dg.MetadataValue.md("| file | bytes |\n|---|---|\n" + rows),
            "removed_backups": len(removed),
            "bucket_objects": len(manifest.bucket_objects),
        }
    )


BACKUP_JOB = dg.define_asset_job("backup", selection=[platform_backup], description="Back up databases and artifacts.")
