"""``price-platform``: the command line of the platform.

Each sub-command lives in a module that exposes ``add_arguments(parser)`` and ``run(args) -> int``
(or, for a module holding several, ``add_<name>_arguments`` and ``run_<name>``, written ``module:name``
below). This module only dispatches, and imports nothing but the module of the command it runs: the
table below is all ``--help`` needs, so ``price-platform keys list`` never loads MLflow or Dagster.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable

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
    "exporter": ("price_platform.commands.exporter", "serve the pipeline's metrics (drift, accuracy, training) for Prometheus"),
    "promote": ("price_platform.commands.registry:promote", "make a registered model version the champion (same checks as the gate)"),
    "rollback": ("price_platform.commands.registry:rollback", "give the champion alias back to the version it replaced"),
    "rollout": ("price_platform.commands.rollout", "canary share, shadow alias and the sequential gate of a challenger"),
    "datasets": ("price_platform.dataset_command", "draft a data set description from a table (init) and check one against a file (check)"),
    "replay": ("price_platform.commands.replay", "play the bundled sales history forward month by month into the landing folder"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="price-platform", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen_command(sys.argv[1:] if argv is None else argv)
    for name, (target, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            add_arguments, run = _entry_points(target)
            add_arguments(sub)
            sub.set_defaults(run=run)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that `with` blocks stop the processes they started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    return int(args.run(args) or 0)


def _chosen_command(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def _entry_points(target: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """``add_arguments`` and ``run`` of a ``module`` or ``module:name`` target."""
    module_name, _, name = target.partition(":")
    module = importlib.import_module(module_name)
    if name:
        return getattr(module, f"add_{name}_arguments"), getattr(module, f"run_{name}")
    return module.add_arguments, module.run


if __name__ == "__main__":
    sys.exit(main())
