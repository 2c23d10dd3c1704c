#!/bin/sh
# Make the secret files docker-compose.yml reads (random passwords and a self-signed TLS
# certificate for the load balancer). Existing files are kept, so re-running is safe.
# Usage: deploy/make-secrets.sh [hostname]   (default: localhost)
set -eu
cd "$(dirname "$0")/secrets"
host=${1:-localhost}
random() { openssl rand -hex 24; }
keep() { [ -s "$1" ]; }

keep postgres_password || random > postgres_password
keep minio_user || echo "price-platform" > minio_user
keep minio_password || random > minio_password
keep grafana_admin_password || random > grafana_admin_password
pg=$(cat postgres_password)
keep PRICE_PLATFORM_DATABASE_URL || echo "postgresql+psycopg2://postgres:${pg}@postgres:5432/postgres" > PRICE_PLATFORM_DATABASE_URL
keep PRICE_PLATFORM_DAGSTER_STORAGE_URL || echo "postgresql://postgres:${pg}@postgres:5432/price_platform_dagster" > PRICE_PLATFORM_DAGSTER_STORAGE_URL
keep mlflow_backend_store_uri || echo "postgresql+psycopg2://postgres:${pg}@postgres:5432/price_platform_mlflow" > mlflow_backend_store_uri
cp minio_user AWS_ACCESS_KEY_ID
cp minio_password AWS_SECRET_ACCESS_KEY
if ! keep tls.key; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=${host}" \
    -addext "subjectAltName=DNS:${host}" -keyout tls.key -out tls.crt 2>/dev/null
fi
# Bind-mounted secrets keep their file mode, so the files are readable by the containers'
# users; the folder itself is private to the owner on the host.
chmod 644 ./*
chmod 700 .
echo "secrets in $(pwd)"
