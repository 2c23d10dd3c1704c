"""``price-platform``: the command line of the platform.

Each sub-command lives in the module of its domain, which exposes ``add_arguments(parser)``
and ``run(args) -> int``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

#: sub-command -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("price_platform.launcher", "start the platform on embedded defaults and print its URLs"),
    "demo": ("price_platform.demo", "run the whole loop headless (backfill, train, serve, replay a year), then exit"),
    "synth": ("price_platform.synth", "write realistic synthetic sales of any size as Parquet into the landing folder"),
    "bulk-load": ("price_platform.bulk_load", "load big Parquet files into price_data.raw_sales with COPY"),
    "backup": ("price_platform.operations.backup", "back up the platform's databases (pg_dump) and artifact folder"),
    "restore": ("price_platform.operations.restore", "restore a backup into empty databases and an empty artifact folder"),
    "serve": ("serving.cli", "run the prediction API (uvicorn, N worker processes)"),
    "keys": ("serving.keys_cli", "create, revoke and list API keys"),
    "exporter": ("price_platform.monitoring.metrics", "serve the pipeline's metrics (drift, accuracy, training) for Prometheus"),
    "promote": ("price_platform.registry.promote_command", "make a registered model version the champion (same checks as the gate)"),
    "rollback": ("price_platform.registry.rollback_command", "give the champion alias back to the version it replaced"),
    "rollout": ("price_platform.rollout.command", "canary share, shadow alias and the sequential gate of a challenger"),
    "datasets": ("price_platform.dataset_command", "draft a data set description from a table (init) and check one against a file (check)"),
    "replay": ("price_platform.monitoring.replay", "play the bundled sales history forward month by month into the landing folder"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="price-platform", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that `with` blocks stop the processes they started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
