"""The landing-folder sensor: a new CSV/Parquet file there is loaded into the partitions its records belong to."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from price_platform.datasets import DatasetSpec, normalise_column
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.records import PARTITION_KEY, typed_records
from price_platform.ingestion.sources import is_sales_file, read_file
from price_platform.defs.ingestion.schedules import INGEST_SALES
from price_platform.partitions import ARRIVAL_BATCHES, sales_partitions


def arrival_batch_key(path: Path) -> str:
    """Partition key of a landed file of a data set without time: its arrival time, then its name."""
    arrived = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return f"{arrived:%Y%m%dT%H%M%S}_{normalise_column(path.name.split('.')[0])}"


def run_config(path: Path) -> dict:
    """Run config that makes ``raw_sales`` load one landed file."""
    return {"ops": {"raw_sales": {"config": {"source_file": str(path)}}}}


def build_landing_sensor(spec: DatasetSpec, landing: Path) -> dg.SensorDefinition:
    """A sensor on ``landing`` requesting one run per new or changed file and partition."""
    partitions = sales_partitions(spec)

    @dg.sensor(
        name="landing_files",
        job_name=INGEST_SALES,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_files(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Loads CSV/Parquet files dropped in the landing folder into their partitions (one run key per file)."""
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        files = sorted(p for p in landing.iterdir() if p.is_file() and is_sales_file(p)) if landing.is_dir() else []
        requests: list[dg.RunRequest] = []
        new_batches: list[str] = []
        problems: list[str] = []
        for path in files:
            stat = path.stat()
            version = f"{stat.st_mtime_ns}:{stat.st_size}"
            if seen.get(path.name) == version:
                continue
            seen[path.name] = version
            batch = arrival_batch_key(path) if spec.time is None else None
            try:
                keys = sorted(set(typed_records(spec, read_file(path), batch)[PARTITION_KEY]))
            except IngestionError as error:
                context.log.error(str(error))
                problems.append(str(error))
                continue
            if batch is not None:
                new_batches.append(batch)
            else:
                known = set(partitions.get_partition_keys())
                outside = [key for key in keys if key not in known]
                if outside:
                    context.log.warning("%s: months outside the data set's partitions are not loaded: %s", path, outside)
                keys = [key for key in keys if key in known]
            requests += [
                dg.RunRequest(
                    run_key=f"{path.name}:{version}:{key}",
                    partition_key=key,
                    run_config=run_config(path),
                    tags={"price_platform/source_file": str(path)},
                )
                for key in keys
            ]
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(seen, sort_keys=True),
            dynamic_partitions_requests=(
                [dg.AddDynamicPartitionsRequest(ARRIVAL_BATCHES, new_batches)] if new_batches else None
            ),
            skip_reason=None if requests else ("; ".join(problems) or f"no new files in {landing}"),
        )

    return landing_files
