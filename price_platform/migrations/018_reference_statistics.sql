-- Reference statistics of drift reports, computed once per reference and read by every report
-- against it (price_platform.monitoring.reference_store): a reference is the champion's
-- training window as loaded; each column keeps a quantile sketch (numeric) or category counts.
create table monitoring.reference_sets (
    reference_key text primary key,          -- hash of the version, the window, its loads and the columns
    model_version text,
    window_label  text not null,
    rows          bigint not null,
    multivariate  jsonb,                      -- the PCA reconstruction-error model fitted on the reference
    created_at    timestamptz not null default now()
);

create table monitoring.reference_statistics (
    reference_key text not null references monitoring.reference_sets on delete cascade,
    position      integer not null,           -- the column's place in the report
    feature       text not null,
    kind          text not null check (kind in ('numeric', 'categorical', 'target')),
    rows          bigint not null,
    points        double precision[],         -- numeric: sorted sketch points
    below         bigint[],                   -- numeric: reference values < each point
    at_or_below   bigint[],                   -- numeric: reference values <= each point
    psi_edges     double precision[],         -- numeric: decile edges of the PSI bins
    categories    text[],                     -- categorical: the categories seen
    counts        bigint[],                   -- categorical: their counts
    primary key (reference_key, kind, feature)
);
