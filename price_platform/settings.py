"""The one settings object of the platform, read from ``PRICE_PLATFORM_*`` environment variables.

Pipeline, serving, CLI and tests all read their configuration from :func:`get_settings`;
nothing else in the code base reads the environment for platform configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_DATASET = PACKAGE_DIR / "datasets" / "ames_housing.yaml"


class Settings(BaseSettings):
    """Every knob of the platform, with the defaults that make ``make up`` work on a fresh clone."""

    model_config = SettingsConfigDict(env_prefix="PRICE_PLATFORM_", extra="ignore")

    # --- storage -----------------------------------------------------------------------
    home: Path = Field(
        default=Path(".price_platform"),
        description="Folder for local state: embedded PostgreSQL data, artifacts, landing files.",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL server URL (any database on it). Unset: an embedded server is started.",
    )
    database_name: str = Field(default="price_platform", description="Database holding the platform's schemas.")
    embedded_port: int = Field(default=55432, description="TCP port of the embedded PostgreSQL.")
    redis_url: str | None = Field(default=None, description="Redis URL; unset: in-process stores.")
    artifact_root: Path | None = Field(default=None, description="MLflow artifact folder (default: <home>/mlartifacts).")
    artifact_bucket_uri: str | None = Field(
        default=None,
        description="s3://bucket/prefix of MLflow's artifacts when they live in S3 (compose: MinIO); backups copy it"
        " (endpoint: MLFLOW_S3_ENDPOINT_URL).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server; unset: the one `price-platform up` starts on `mlflow_port`."
    )

    # --- data --------------------------------------------------------------------------
    dataset: Path = Field(default=DEFAULT_DATASET, description="YAML description of the price data set.")
    landing_dir: Path | None = Field(default=None, description="Folder watched for new sales files.")
    max_rejected_share: float = Field(default=0.05, ge=0.0, le=1.0, description="Bad-row share that fails a partition.")
    landing_max_file_bytes: int = Field(
        default=256 * 1024**2, ge=1,
        description="Largest landed file (bytes on disk) that is read; a larger one is refused before it is opened.",
    )
    landing_max_decompressed_bytes: int = Field(
        default=1024**3, ge=1,
        description="Most bytes a landed file may hold once decompressed (a .csv.gz inflated, a Parquet file's"
        " uncompressed row groups); reading stops, and the file is refused, as soon as it would hold more.",
    )
    backfill_until: str | None = Field(default=None, description="Last month (YYYY-MM) `make up` backfills.")

    # --- training ----------------------------------------------------------------------
    model_name: str = Field(default="price-model", description="Registered model name in MLflow.")
    holdout_months: int = Field(default=12, ge=1)
    validation_months: int = Field(default=6, ge=1)
    n_trials: int = Field(default=30, ge=1, description="Optuna trial budget per study (the budget: seeded, so load-independent).")
    study_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="Safety limit of a study's time; a study it stops is logged as cut short."
    )
    promotion_margin: float = Field(default=0.0, ge=0.0, description="Relative RMSLE gain a challenger needs.")
    interval_coverage: float = Field(default=0.9, gt=0.0, lt=1.0)
    seed: int = 42
    parallel_trees: int = Field(
        default=1, ge=1,
        description="Trees averaged per boosting round of the registered model (XGBoost num_parallel_tree). 3 kept"
        " the blend's mean validation RMSLE and cut its spread over seeds from about 0.0006 to 0.00025, but every"
        " prediction then walks three times as many trees (serving: about 2,500 instead of 4,000 requests/s).",
    )
    threads: int = Field(default=1, ge=1, description="Threads for XGBoost (OpenMP).")

    # --- serving and the local stack ----------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    dagster_port: int = Field(default=3000, description="Dagster UI port of `price-platform up`.")
    mlflow_port: int = Field(default=5000, description="MLflow UI/tracking port of `price-platform up`.")
    prometheus_port: int = Field(default=9090, description="Prometheus port of `price-platform up` (when installed).")
    auth_enabled: bool = Field(default=True, description="Require API keys (switch off only for local use).")
    max_batch_size: int = Field(default=1000, ge=1)
    batch_window_ms: float = Field(
        default=2.0, ge=0,
        description="Longest wait of a one-record prediction for the /predict requests still on their way, so one"
        " model call prices them all (0: no wait). A request with no other on its way never waits.",
    )
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    rate_limit_per_minute: int = Field(default=6000, ge=1)
    unauthorized_per_minute: int = Field(
        default=60, ge=1,
        description="Requests without a valid API key answered 401 per client address and minute; more get 429.",
    )
    model_poll_seconds: float = Field(default=5.0, gt=0)
    log_buffer_size: int = Field(
        default=250_000,
        ge=1,
        description="Prediction-log rows held in memory while PostgreSQL is away (about 1 KB each): size it"
        " as rows per second times the outage to ride out; rows beyond it are dropped and counted.",
    )
    log_spill_dir: Path | None = Field(
        default=None,
        description="Folder where each API worker appends the prediction-log rows it cannot write while PostgreSQL is"
        " away (fsynced; replayed into the table when it answers, and at start). Default: <home>/spill; keep it on a"
        " persistent volume.",
    )
    log_spill_rows: int = Field(
        default=100_000, ge=1,
        description="Prediction-log rows waiting in memory above which batches go to the spill file even while"
        " PostgreSQL answers (it is slower than the requests), to be replayed once the backlog is below it again.",
    )
    pii_hmac_key: str | None = Field(
        default=None,
        description="Secret key of the HMAC that replaces the data set's pii values in the prediction log; unset: one"
        " generated once and kept in <home>/pii_hmac.key (give every API server the same one).",
    )
    drain_seconds: float = Field(default=2.0, ge=0, description="On SIGTERM: /ready answers 503 this long before the server stops.")
    keep_alive_seconds: int = Field(
        default=75, ge=1,
        description="Idle seconds before the API closes a kept-alive connection. Keep it above the idle timeout of"
        " clients and load balancers (httpx 5 s, nginx and cloud balancers 60 s), so a client never sends on a"
        " connection the server is closing.",
    )

    # --- monitoring --------------------------------------------------------------------
    psi_threshold: float = Field(default=0.2, gt=0)
    drift_share_threshold: float = Field(default=0.3, gt=0, le=1, description="Share of drifted features that retrains.")
    accuracy_drop_threshold: float = Field(default=0.1, gt=0)
    estimated_rmsle_rise_threshold: float = Field(
        default=0.25, gt=0,
        description="Relative rise of the latest month's estimated RMSLE (direct loss estimation, before prices"
        " arrive) over the champion's reference RMSLE that requests a retrain.",
    )
    alert_webhook_url: str | None = None
    prediction_retention_months: int | None = Field(default=None, ge=1)
    prediction_partitions_ahead: int = Field(default=3, ge=1, description="Months of prediction-log partitions made ahead.")
    exporter_port: int = Field(default=9108, description="Port of `price-platform exporter` (pipeline metrics).")

    # --- rollout (shadow, canary, sequential gate) ---------------------------------------
    rollout_alpha: float = Field(default=0.05, gt=0, lt=1, description="Error level of the sequential gate.")
    rollout_min_pairs: int = Field(default=50, ge=2, description="Paired live errors before the gate may decide.")
    rollout_max_pairs: int = Field(
        default=50_000, ge=2, description="Pairs after which a challenger not shown better is rolled back."
    )
    rollout_tuned_for: int = Field(default=2_000, ge=1, description="Pairs at which the gate's interval is tightest.")
    rollout_after_retrain: bool = Field(
        default=False,
        description="A retrain's challenger that passes the holdout gate stays `challenger` for shadow, canary and the"
        " sequential gate instead of being promoted at once (a first champion is still promoted).",
    )

    # --- scale-out and operations -------------------------------------------------------
    executor: Literal["in_process", "multiprocess"] = Field(
        default="in_process",
        description="How a Dagster run executes its steps: in the run's process (fast start on a small machine)"
        " or one process per step (parallel steps, concurrency pools).",
    )
    dask_scheduler: str | None = Field(default=None, description="Dask scheduler address; set: training runs on Dask.")
    dask_min_rows: int = Field(default=5_000_000, ge=1, description="Feature rows from which training runs on Dask.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate: the API serves HTTPS when set.")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of `tls_cert_file`.")
    backup_dir: Path | None = Field(default=None, description="Folder of `price-platform backup` (default: <home>/backups).")
    backup_cron: str = Field(default="0 2 * * *", description="Cron schedule of the daily backup in Dagster.")
    backup_keep: int = Field(default=7, ge=1, description="Backups kept by the scheduled backup; older ones are removed.")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking server every part of the platform talks to."""
        return self.mlflow_tracking_uri or f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def artifacts(self) -> Path:
        """Folder where MLflow stores model files and plots."""
        return (self.artifact_root or self.home / "mlartifacts").resolve()

    @property
    def backups(self) -> Path:
        """Folder where backups are written."""
        return (self.backup_dir or self.home / "backups").resolve()

    @property
    def log_spill(self) -> Path:
        """Folder of the prediction log's spill files."""
        return (self.log_spill_dir or self.home / "spill").resolve()

    @property
    def landing(self) -> Path:
        """Folder where new sales files are dropped."""
        return (self.landing_dir or self.home / "landing").resolve()


def default(name: str) -> Any:
    """The default of one setting: typed resources declare their config fields with it, never a copy."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
