"""``price-platform replay``: play the bundled sales history forward month by month into the landing folder."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from price_platform.monitoring.replay import SHOCK_FACTOR, ReplayError, decisions, replay, summary
from price_platform.settings import get_settings
from price_platform.warehouse import platform_server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--months", type=int, default=12, help="months of history to play (default 12)")
    parser.add_argument("--start", default=None, help="first month, YYYY-MM (default: after the newest features)")
    parser.add_argument("--shock", default=None, metavar="YYYY-MM",
                        help=f"multiply that month's prices by {SHOCK_FACTOR:g} (a simulated market jump)")
    parser.add_argument("--no-wait", action="store_true", help="drop the files without waiting for drift reports")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each month's drift report")


def run(args: argparse.Namespace) -> int:
    if args.months < 1:
        raise SystemExit("--months must be at least 1")
    settings = get_settings()
    dsn = platform_server(settings).dsn()
    started = datetime.now(UTC)
    try:
        outcomes = replay(settings, dsn, args.months, args.start, wait=not args.no_wait, timeout=args.timeout,
                          shock=args.shock)
    except ReplayError as error:
        print(f"replay stopped: {error}")
        return 1
    print(summary(outcomes, decisions(dsn, settings.model_name, started)))
    return 0
