-- The platform's databases (docs/architecture.md), created on the server's first start so
-- that MLflow and Dagster find theirs; the platform's own code creates any that are missing.
create database price_platform;
create database price_platform_dagster;
create database price_platform_mlflow;
create database price_platform_optuna;
