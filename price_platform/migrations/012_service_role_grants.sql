-- Least privilege for the services of a deployment (deploy/postgres/init.sql makes the roles).
-- The roles are named after the database: <database>_api (the prediction API) and
-- <database>_readonly (the metrics exporter). Where they do not exist (a laptop, the tests'
-- databases) this migration grants nothing. The owner role that applies migrations (Dagster's)
-- keeps every right; MLflow's role has its own database only.
do $grants$
declare
    api      text := current_database() || '_api';
    readonly text := current_database() || '_readonly';
begin
    if exists (select 1 from pg_roles where rolname = api) then
        -- The API: read keys, deployments and artifact digests; write the prediction log,
        -- feedback, the audit log and (admin rollback) a deployment row. Nothing else.
        execute format('grant usage on schema model_registry, monitoring to %I', api);
        execute format('grant select on public.schema_migrations to %I', api);
        execute format('grant select on model_registry.api_keys, model_registry.deployments,'
                       ' model_registry.artifact_digests to %I', api);
        execute format('grant insert on model_registry.audit_log, model_registry.deployments to %I', api);
        execute format('grant usage on sequence model_registry.audit_log_id_seq, model_registry.deployments_id_seq to %I', api);
        execute format('grant select, insert on monitoring.predictions to %I', api);
        execute format('grant select, insert, update on monitoring.actuals to %I', api);
    end if;
    if exists (select 1 from pg_roles where rolname = readonly) then
        -- The exporter: read the platform's tables (now and those made later), never the key hashes.
        execute format('grant usage on schema price_data, model_registry, monitoring to %I', readonly);
        execute format('grant select on public.schema_migrations to %I', readonly);
        execute format('grant select on all tables in schema price_data, model_registry, monitoring to %I', readonly);
        execute format('alter default privileges in schema price_data, model_registry, monitoring'
                       ' grant select on tables to %I', readonly);
        execute format('revoke select on model_registry.api_keys from %I', readonly);
    end if;
end
$grants$;
