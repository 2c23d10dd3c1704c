-- The platform's databases (docs/architecture.md) and one role per service, created on the
-- server's first start (psql, as the superuser). Passwords come from the secret files of
-- deploy/make-secrets.sh (read by psql's backquotes; SECRETS_DIR defaults to /run/secrets).
--
--   price_platform_owner     Dagster and migrations: owns the platform's, Dagster's and Optuna's
--                            databases; member of the MLflow role so that backups can dump it
--   price_platform_api       the prediction API: the grants of migration 012 only
--   price_platform_readonly  the metrics exporter: reads the platform's tables (migration 012)
--   price_platform_mlflow    the MLflow server: owns its own database, nothing else
\set ON_ERROR_STOP on
\set owner_password `cat "${SECRETS_DIR:-/run/secrets}/pg_owner_password"`
\set api_password `cat "${SECRETS_DIR:-/run/secrets}/pg_api_password"`
\set readonly_password `cat "${SECRETS_DIR:-/run/secrets}/pg_readonly_password"`
\set mlflow_password `cat "${SECRETS_DIR:-/run/secrets}/pg_mlflow_password"`

create role price_platform_owner login password :'owner_password';
create role price_platform_api login password :'api_password';
create role price_platform_readonly login password :'readonly_password';
create role price_platform_mlflow login password :'mlflow_password';
grant price_platform_mlflow to price_platform_owner;

create database price_platform owner price_platform_owner;
create database price_platform_dagster owner price_platform_owner;
create database price_platform_mlflow owner price_platform_mlflow;
create database price_platform_optuna owner price_platform_owner;

revoke all on database price_platform, price_platform_dagster, price_platform_mlflow, price_platform_optuna from public;
grant connect on database price_platform to price_platform_api, price_platform_readonly;
