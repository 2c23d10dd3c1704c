"""The landing-folder sensor: a new CSV/Parquet file there is loaded into the partitions its records belong to.

A landed file is untrusted input, so the sensor only lists the folder (name, size, mtime) and
requests runs; files are read, capped (:class:`~price_platform.ingestion.sources.FileLimits`)
and validated in runs, never in the sensor's evaluation, which shares the daemon with every
other sensor. A data set without time loads each file as a new arrival batch at once. With
time, a file's months are known only once it is read: a ``scan_landed_file`` run reads and
validates it and tags itself with its months; a later tick requests one ``load_landed_file``
run per month, or reports why the scan failed.
"""

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from price_platform.datasets import DatasetSpec, normalise_column
from price_platform.defs.ingestion.assets import RAW_SALES
from price_platform.defs.partitions import ARRIVAL_BATCHES, sales_partitions
from price_platform.ingestion.errors import IngestionError
from price_platform.ingestion.records import PARTITION_KEY, typed_records
from price_platform.ingestion.sources import is_sales_file, read_file
from price_platform.settings import get_settings

#: Job that reads and validates one landed file of a data set with time and tags the run with its months.
SCAN_LANDED_FILE = "scan_landed_file"
#: Job that materialises ``raw_sales`` and its checks for one partition from one landed file.
LOAD_LANDED_FILE = "load_landed_file"
#: Run tags: the landed file, its version (``<name>:<mtime_ns>:<size>``), and the months a scan found.
FILE_TAG = "price_platform/source_file"
VERSION_TAG = "price_platform/landing_version"
MONTHS_TAG = "price_platform/months"
#: What the cursor holds for a symbolic link, so that it is reported once.
SYMLINK = "symlink"


@dataclass(frozen=True)
class LandedFile:
    """A sales file as the folder listing shows it; nothing of its contents."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def version(self) -> str:
        """Changes whenever the file is rewritten: its mtime and size."""
        return f"{self.mtime_ns}:{self.size}"


@dataclass
class LandingCursor:
    """The sensor's memory: the version of every file handled, and the files whose scan run has not ended."""

    files: dict[str, str] = field(default_factory=dict)
    scanning: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> "LandingCursor":
        """The cursor a tick left; a cursor of before scans (a flat name -> version map) is the files map."""
        value = json.loads(cursor) if cursor else {}
        if "files" not in value:
            return cls(files=value)
        return cls(files=value["files"], scanning=value["scanning"])

    def dump(self) -> str:
        return json.dumps({"files": self.files, "scanning": self.scanning}, sort_keys=True)


class LandedFileConfig(dg.Config):
    """The landed file a scan run reads."""

    source_file: str = Field(description="Path of the landed CSV/Parquet file to read and validate.")


def list_landing(landing: Path) -> tuple[list[LandedFile], list[Path]]:
    """The folder's sales files that are regular files, and the symbolic links named like sales files.

    Only directory entries and their ``lstat`` are looked at: no file is opened, no link followed.
    """
    files: list[LandedFile] = []
    links: list[Path] = []
    with os.scandir(landing) as entries:
        for entry in entries:
            path = Path(entry.path)
            if not is_sales_file(path):
                continue
            if entry.is_symlink():
                links.append(path)
            elif entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                files.append(LandedFile(path=path, size=info.st_size, mtime_ns=info.st_mtime_ns))
    return sorted(files, key=lambda file: file.path.name), sorted(links)


def arrival_batch_key(file: LandedFile) -> str:
    """Partition key of a landed file of a data set without time: its arrival time, then its name."""
    arrived = datetime.fromtimestamp(file.mtime_ns / 1e9, UTC)
    return f"{arrived:%Y%m%dT%H%M%S}_{normalise_column(file.path.name.split('.')[0])}"


def run_config(path: Path) -> dict:
    """Run config that makes ``raw_sales`` load one landed file."""
    return {"ops": {"raw_sales": {"config": {"source_file": str(path)}}}}


def build_scan_job(spec: DatasetSpec) -> dg.JobDefinition:
    """The job that reads and validates one landed file and tags its run with the file's months."""

    @dg.op
    def read_landed_file(context: dg.OpExecutionContext, config: LandedFileConfig) -> None:
        """Reads the file within the landing caps, types its records and tags the run with their months."""
        path = Path(config.source_file)
        try:
            months = sorted(set(typed_records(spec, read_file(path, kind="landing"), None)[PARTITION_KEY]))
        except IngestionError as error:
            raise dg.Failure(description=str(error)) from error
        context.log.info("%s: records of %d months: %s", path, len(months), ", ".join(months))
        context.instance.add_run_tags(context.run_id, {MONTHS_TAG: ",".join(months)})

    @dg.job(name=SCAN_LANDED_FILE, executor_def=dg.in_process_executor)
    def scan_landed_file() -> None:
        """Reads and validates one landed file; the landing sensor then requests a load of each of its months."""
        read_landed_file()

    return scan_landed_file


def build_load_job():  # -> dagster's unresolved asset job (no public type)
    """``raw_sales`` and its checks for one partition from one landed file, in the run's own process."""
    return dg.define_asset_job(
        LOAD_LANDED_FILE, selection=dg.AssetSelection.assets(RAW_SALES), executor_def=dg.in_process_executor
    )


def build_landing_sensor(spec: DatasetSpec, landing: Path, max_file_bytes: int | None = None) -> dg.SensorDefinition:
    """A sensor on ``landing`` requesting the runs that load each new or changed file, one per partition.

    ``max_file_bytes`` (default: ``Settings.landing_max_file_bytes``) refuses a larger file from
    its listed size, before any run; the runs enforce the same caps when they read.
    """
    partitions = sales_partitions(spec)
    cap = max_file_bytes if max_file_bytes is not None else get_settings().landing_max_file_bytes
    jobs = [build_load_job(), *([build_scan_job(spec)] if spec.has_time else [])]

    @dg.sensor(
        name="landing_files", jobs=jobs, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
    )
    def landing_files(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Loads CSV/Parquet files dropped in the landing folder into their partitions (read in runs, not here)."""
        state = LandingCursor.parse(context.cursor)
        files, links = list_landing(landing) if landing.is_dir() else ([], [])
        listed = {file.path.name: file for file in files}
        requests: list[dg.RunRequest] = []
        new_batches: list[str] = []
        problems: list[str] = []

        for name, version in sorted(state.scanning.items()):
            file = listed.get(name)
            if file is None or file.version != version:  # gone, or rewritten: its new version gets its own scan
                del state.scanning[name]
                continue
            run = next(iter(context.instance.get_runs(
                dg.RunsFilter(job_name=SCAN_LANDED_FILE, tags={VERSION_TAG: f"{name}:{version}"}), limit=1
            )), None)
            if run is None or not run.is_finished:
                continue
            del state.scanning[name]
            if not run.is_success:
                problems.append(scan_failure(context.instance, run, file.path))
                continue
            months = run.tags.get(MONTHS_TAG, "").split(",")
            known = set(partitions.get_partition_keys())
            outside = [month for month in months if month not in known]
            if outside:
                context.log.warning("%s: months outside the data set's partitions are not loaded: %s", file.path, outside)
            requests += [load_request(file, month) for month in months if month in known]

        for link in links:
            if state.files.get(link.name) != SYMLINK:
                state.files[link.name] = SYMLINK
                problems.append(f"{link}: a symbolic link, skipped: landed files are read only as regular files")
        for file in files:
            name = file.path.name
            if state.files.get(name) == file.version:
                continue
            state.files[name] = file.version
            if file.size > cap:
                problems.append(
                    f"{file.path}: {file.size} bytes, over the landing-file cap of {cap} bytes"
                    " (PRICE_PLATFORM_LANDING_MAX_FILE_BYTES); not loaded"
                )
            elif spec.time is None:
                batch = arrival_batch_key(file)
                new_batches.append(batch)
                requests.append(load_request(file, batch))
            else:
                state.scanning[name] = file.version
                requests.append(scan_request(file))

        for problem in problems:
            context.log.error(problem)
        return dg.SensorResult(
            run_requests=requests,
            cursor=state.dump(),
            dynamic_partitions_requests=(
                [dg.AddDynamicPartitionsRequest(ARRIVAL_BATCHES, new_batches)] if new_batches else None
            ),
            skip_reason=None if requests else ("; ".join(problems) or f"no new files in {landing}"),
        )

    return landing_files


def scan_request(file: LandedFile) -> dg.RunRequest:
    """The run that reads and validates ``file`` and finds its months."""
    return dg.RunRequest(
        job_name=SCAN_LANDED_FILE,
        run_key=f"{file.path.name}:{file.version}:scan",
        run_config={"ops": {"read_landed_file": {"config": {"source_file": str(file.path)}}}},
        tags={FILE_TAG: str(file.path), VERSION_TAG: f"{file.path.name}:{file.version}"},
    )


def load_request(file: LandedFile, partition_key: str) -> dg.RunRequest:
    """The run that loads ``file``'s records of one partition."""
    return dg.RunRequest(
        job_name=LOAD_LANDED_FILE,
        run_key=f"{file.path.name}:{file.version}:{partition_key}",
        partition_key=partition_key,
        run_config=run_config(file.path),
        tags={FILE_TAG: str(file.path)},
    )


def scan_failure(instance: dg.DagsterInstance, run: dg.DagsterRun, path: Path) -> str:
    """Why a scan run failed: its step's failure (which names the file), else its status."""
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        failure = record.dagster_event.step_failure_data if record.dagster_event else None
        if failure and failure.user_failure_data and failure.user_failure_data.description:
            return failure.user_failure_data.description
        if failure and failure.error:
            return f"{path}: {failure.error.message.strip()}"
    return f"{path}: scan run {run.run_id} ended {run.status.value}"
