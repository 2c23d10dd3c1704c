-- The platform's three schemas and the tables whose shape does not depend on the data set.
-- (price_data.raw_sales is created from the data set description by the ingestion code.)
create schema if not exists price_data;
create schema if not exists model_registry;
create schema if not exists monitoring;

create table price_data.loads (
    load_id      uuid primary key,
    partition_key text not null,
    source       text not null,          -- 'bundled', 'landing', 'sql'
    source_file  text,
    rows_loaded  integer not null,
    rows_rejected integer not null,
    loaded_at    timestamptz not null default now()
);

create table price_data.rejected_rows (
    id           bigserial primary key,
    load_id      uuid not null,
    partition_key text not null,
    source_file  text,
    row_number   integer,
    record       jsonb not null,
    reasons      text[] not null,
    rejected_at  timestamptz not null default now()
);
create index rejected_rows_partition on price_data.rejected_rows (partition_key);

create table model_registry.deployments (
    id           bigserial primary key,
    model_name   text not null,
    from_version text,
    to_version   text not null,
    action       text not null check (action in ('promote', 'rollback', 'refuse')),
    reason       text not null,
    actor        text not null,
    metrics      jsonb not null default '{}',
    dagster_run_id text,
    created_at   timestamptz not null default now()
);

create table model_registry.audit_log (
    id           bigserial primary key,
    actor        text not null,
    action       text not null,
    detail       jsonb not null default '{}',
    created_at   timestamptz not null default now()
);

create table model_registry.api_keys (
    key_id       text primary key,
    key_hash     text not null,
    role         text not null check (role in ('predict', 'admin')),
    description  text not null default '',
    created_at   timestamptz not null default now(),
    revoked_at   timestamptz
);

create table monitoring.predictions (
    prediction_id uuid not null,
    created_at    timestamptz not null,
    model_version text not null,
    features      jsonb not null,
    prediction    double precision not null,
    lower_bound   double precision,
    upper_bound   double precision,
    latency_ms    double precision,
    key_id        text,
    primary key (prediction_id, created_at)
) partition by range (created_at);
create index predictions_version_time on monitoring.predictions (model_version, created_at);

create table monitoring.actuals (
    prediction_id uuid primary key,
    actual        double precision not null,
    received_at   timestamptz not null default now()
);

create table monitoring.model_metrics (
    id            bigserial primary key,
    model_version text not null,
    period_start  date,
    metric        text not null,
    value         double precision not null,
    segment       text,
    source        text not null,          -- 'holdout', 'live'
    created_at    timestamptz not null default now()
);

create table monitoring.drift_reports (
    id            bigserial primary key,
    partition_key text not null,
    model_version text,
    feature       text not null,
    kind          text not null,          -- 'numeric', 'categorical', 'target', 'prediction'
    psi           double precision,
    ks            double precision,
    js            double precision,
    chi2_p        double precision,
    drifted       boolean not null,
    created_at    timestamptz not null default now()
);
create index drift_reports_partition on monitoring.drift_reports (partition_key, created_at);
