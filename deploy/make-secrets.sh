#!/bin/sh
# Make the secret files docker-compose.yml reads: random passwords (one PostgreSQL role per
# service, Redis users, the web UIs' login), the connection URLs built from them, and a
# self-signed TLS certificate for the reverse proxy. Existing files are kept, so re-running
# is safe (delete a file to rotate it, and the files built from it).
# Usage: deploy/make-secrets.sh [hostname]   (default: localhost)
set -eu
cd "$(dirname "$0")/secrets"
host=${1:-localhost}
random() { openssl rand -hex 24; }
keep() { [ -s "$1" ]; }

# PostgreSQL: the superuser (init and restores only) and one role per service
# (deploy/postgres/init.sql makes them; migration 012 grants the API and exporter roles).
keep postgres_password || random > postgres_password
for role in owner api readonly mlflow; do
  keep "pg_${role}_password" || random > "pg_${role}_password"
done
url() { # url ROLE DATABASE [DRIVER]
  echo "postgresql${3:-}://price_platform_$1:$(cat "pg_$1_password")@postgres:5432/$2"
}
keep owner_database_url || url owner postgres +psycopg2 > owner_database_url          # Dagster, migrations
keep api_database_url || url api postgres +psycopg2 > api_database_url                # the prediction API
keep readonly_database_url || url readonly postgres +psycopg2 > readonly_database_url  # the metrics exporter
keep PRICE_PLATFORM_DAGSTER_STORAGE_URL || url owner price_platform_dagster > PRICE_PLATFORM_DAGSTER_STORAGE_URL
keep mlflow_backend_store_uri || url mlflow price_platform_mlflow +psycopg2 > mlflow_backend_store_uri

# Redis: ACL users; the default user is off, the platform may touch only its own keys and channels.
keep redis_password || random > redis_password
keep PRICE_PLATFORM_REDIS_URL || echo "redis://platform:$(cat redis_password)@redis:6379/0" > PRICE_PLATFORM_REDIS_URL
keep redis_acl || {
  echo "user default off"
  echo "user platform on >$(cat redis_password) ~price-platform:* &price-platform:* +@all -@dangerous"
  echo "user healthcheck on nopass resetchannels -@all +ping"
} > redis_acl

# MinIO (MLflow's artifact bucket)
keep minio_user || echo "price-platform" > minio_user
keep minio_password || random > minio_password
cp minio_user AWS_ACCESS_KEY_ID
cp minio_password AWS_SECRET_ACCESS_KEY

# The web UIs behind the reverse proxy (MLflow, Dagster: basic auth; Grafana: its own login).
keep grafana_admin_password || random > grafana_admin_password
keep ui_password || random > ui_password
keep ui_htpasswd || echo "admin:$(openssl passwd -apr1 "$(cat ui_password)")" > ui_htpasswd

if ! keep tls.key; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=${host}" \
    -addext "subjectAltName=DNS:${host}" -keyout tls.key -out tls.crt 2>/dev/null
fi
# Bind-mounted secrets keep their file mode, so the files are readable by the containers'
# users; the folder itself is private to the owner on the host.
chmod 644 ./*
chmod 700 .
echo "secrets in $(pwd) (web UIs: user admin, password in ui_password)"
