"""``price-platform exporter``: serve the pipeline's metrics (drift, accuracy, training) for Prometheus."""

from __future__ import annotations

import argparse
import logging
import time

from price_platform.monitoring.metrics import serve
from price_platform.settings import get_settings
from price_platform.warehouse import platform_server

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (default: the API host)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: exporter_port)")


def run(args: argparse.Namespace) -> int:
    """Serve ``/metrics`` until interrupted."""
    settings = get_settings()
    dsn = platform_server(settings).dsn()
    host, port = args.host or settings.api_host, args.port or settings.exporter_port
    http = serve(dsn, settings.tracking_uri, settings.model_name, host, port)
    log.info("pipeline metrics on http://%s:%s/metrics", host, port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        http.shutdown()
    return 0
