"""``price-platform rollout``: the canary share, the shadow alias, and one evaluation of the sequential gate."""

from __future__ import annotations

import argparse
import getpass
import sys

from mlflow.exceptions import MlflowException

from price_platform.registry.announce import announce_champion
from price_platform.rollout import gate, traffic
from price_platform.rollout.sequential import SequentialTest
from price_platform.settings import get_settings
from price_platform.warehouse import platform_server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor", default=getpass.getuser(), help="who (default: the current user; audit log)")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    canary = steps.add_parser("canary", help="let the challenger answer a share of the traffic (0 stops it)")
    canary.add_argument("--share", type=float, required=True, help="share of requests, from 0 to 1 (e.g. 0.1)")
    shadow = steps.add_parser("shadow", help="point the alias shadow at a version (omitted: remove it)")
    shadow.add_argument("version", nargs="?", help="registered version; omitted: remove the shadow")
    steps.add_parser("gate", help="run the sequential gate once: promote, roll back or wait")
    steps.add_parser("status", help="print the aliases and the canary share")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    uri, name, dsn = settings.tracking_uri, settings.model_name, platform_server(settings).dsn()
    try:
        if args.step == "canary":
            state = traffic.set_canary(uri, name, args.share, dsn=dsn, actor=args.actor)
        elif args.step == "shadow":
            state = traffic.set_shadow(uri, name, args.version, dsn=dsn, actor=args.actor)
        elif args.step == "gate":
            test = SequentialTest(alpha=settings.rollout_alpha, min_pairs=settings.rollout_min_pairs,
                                  tuned_for=settings.rollout_tuned_for, max_pairs=settings.rollout_max_pairs)
            decided = gate.evaluate(uri, name, dsn=dsn, test=test, actor=args.actor)
            if decided is None:
                print(f"{name} has no challenger to judge against a champion")
                return 0
            if decided.acted and decided.status == gate.PROMOTED:
                announce_champion(settings.redis_url, name, decided.challenger)
            print(f"{name} version {decided.challenger} vs {decided.champion}: {decided.status} ({decided.reason})")
            return 0
        else:
            state = traffic.current(uri, name)
    except (traffic.RolloutError, MlflowException) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{name}: champion {state.champion}, challenger {state.challenger}, shadow {state.shadow},"
          f" canary share {state.canary_share:g}")
    return 0
