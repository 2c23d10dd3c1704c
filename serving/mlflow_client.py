"""How a serving process's MLflow client talks to the registry: set for the whole process, by its entry point.

MLflow reads these from the environment at every request; :func:`serving.app.create_app` leaves
the environment alone, :func:`serving.app.app_from_environment` (the uvicorn factory of
``price-platform serve``'s workers) calls :func:`configure`.
"""

from __future__ import annotations

import os

#: MLflow's client retries a dead server for minutes by default (7 retries, growing waits, 120 s
#: timeout); the model store's alias poll tries again anyway.
ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def configure() -> None:
    """Set MLflow's client retries and timeout for this process, unless its environment sets them."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
