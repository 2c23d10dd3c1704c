#!/bin/sh
# Secrets from files: every file in the secrets folder (/run/secrets, or $SECRETS_DIR) named
# like an environment variable of the platform, MLflow or S3 (PRICE_PLATFORM_*, MLFLOW_*,
# AWS_*) becomes that variable, so no secret is ever a literal in docker-compose.yml or in
# the image. Then the service's command runs in this process's place.
set -eu
secrets=${SECRETS_DIR:-/run/secrets}
if [ -d "$secrets" ]; then
  for file in "$secrets"/PRICE_PLATFORM_* "$secrets"/MLFLOW_* "$secrets"/AWS_*; do
    [ -f "$file" ] || continue
    name=$(basename "$file")
    value=$(cat "$file")
    export "$name=$value"
  done
fi
exec "$@"
