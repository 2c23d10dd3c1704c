# One image for the whole platform: pipeline code, Dagster webserver and daemon, MLflow
# server and the prediction API; the service's command picks the role (docker-compose.yml).
# The project is installed in place (editable) under /app, because the code finds the dbt
# project and workspace.yaml beside the package, as in a checkout.
FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    DAGSTER_HOME=/opt/dagster \
    PRICE_PLATFORM_HOME=/var/lib/price-platform
RUN groupadd --system app && useradd --system --gid app --home-dir /app app \
 && mkdir -p /app /opt/dagster /var/lib/price-platform /backups \
 && chown app:app /app /opt/dagster /var/lib/price-platform /backups
WORKDIR /app
# Dependencies first (a layer that changes only with pyproject.toml and uv.lock): exactly the lock's
# versions, each download checked against its SHA-256, as `make install` does; then the code.
COPY pyproject.toml uv.lock README.md ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install uv==0.13.9 \
 && UV_PROJECT_ENVIRONMENT=/opt/venv /opt/venv/bin/uv sync --frozen --no-install-project --extra deploy
COPY --chown=app:app price_platform ./price_platform
COPY --chown=app:app serving ./serving
COPY --chown=app:app dbt ./dbt
COPY --chown=app:app workspace.yaml ./
COPY --chown=app:app dagster.yaml /opt/dagster/dagster.yaml
RUN /opt/venv/bin/pip install --no-deps -e . && chown -R app:app /app
COPY --chmod=755 deploy/entrypoint.sh /usr/local/bin/entrypoint.sh
USER app
EXPOSE 8000 3000 5000 9108
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["price-platform", "serve", "--workers", "2"]
