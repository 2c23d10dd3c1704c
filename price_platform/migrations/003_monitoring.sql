-- Monitoring: drift summaries, the indexes the dashboards and live_performance read by,
-- and the extra statistics of drift_reports. Monthly partitions of monitoring.predictions
-- are created ahead of time (and detached by retention) by price_platform.monitoring.partitions.
alter table monitoring.drift_reports
    add column ks_p           double precision,
    add column reference_rows integer,
    add column current_rows   integer,
    add column report_id      uuid;
create index drift_reports_report on monitoring.drift_reports (report_id);

-- One row per drift report: what moved, against which champion, and whether it retrains.
create table monitoring.drift_summaries (
    report_id          uuid primary key,
    partition_key      text not null,
    model_version      text,
    reference_rows     integer not null,
    current_rows       integer not null,
    features_checked   integer not null,
    features_drifted   integer not null,
    drifted_share      double precision not null,
    target_psi         double precision,
    target_drifted     boolean not null default false,
    prediction_psi     double precision,
    prediction_drifted boolean not null default false,
    drift_detected     boolean not null,
    dagster_run_id     text,
    created_at         timestamptz not null default now()
);
create index drift_summaries_partition on monitoring.drift_summaries (partition_key, created_at);
create index drift_summaries_time on monitoring.drift_summaries (created_at);

-- live_performance joins predictions to actuals by prediction id and reads recent weeks.
create index predictions_created on monitoring.predictions (created_at);
create index actuals_received on monitoring.actuals (received_at);
create index model_metrics_version_period on monitoring.model_metrics (model_version, period_start);
create index model_metrics_source_time on monitoring.model_metrics (source, created_at);
