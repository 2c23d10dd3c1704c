-- Safe rollout. Predictions scored off the request path (a shadow's, and the champion's beside a
-- canary's answer): the answer itself stays in monitoring.predictions, these rows sit beside it
-- under the same prediction id, so the gate pairs two versions' errors on the same requests.
create table monitoring.rollout_predictions (
    prediction_id uuid not null,
    model_version text not null,
    role          text not null check (role in ('shadow', 'champion')),
    prediction    double precision not null,
    latency_ms    double precision,
    created_at    timestamptz not null default now(),
    primary key (prediction_id, model_version)
);
create index rollout_predictions_version on monitoring.rollout_predictions (model_version, created_at);

-- One row per challenger judged against one champion by the sequential gate: its state, and the
-- deployment row of its decision. Gates lock the row (select ... for update) so one decides.
create table model_registry.rollouts (
    id                 bigserial primary key,
    model_name         text not null,
    challenger_version text not null,
    champion_version   text not null,
    status             text not null check (status in ('waiting', 'promoted', 'rolled_back', 'refused')),
    pairs              integer not null default 0,
    metrics            jsonb not null default '{}',
    reason             text not null default '',
    deployment_id      bigint references model_registry.deployments (id),
    started_at         timestamptz not null default now(),
    decided_at         timestamptz,
    unique (model_name, challenger_version, champion_version)
);

-- The prediction API writes the off-path scores (see 012_service_role_grants.sql for the roles).
do $grants$
declare
    api text := current_database() || '_api';
begin
    if exists (select 1 from pg_roles where rolname = api) then
        execute format('grant select, insert on monitoring.rollout_predictions to %I', api);
    end if;
end
$grants$;
