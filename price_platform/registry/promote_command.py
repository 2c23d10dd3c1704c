"""``price-platform promote VERSION``: make a registered version the champion, through the gate's checks."""

from __future__ import annotations

import argparse
import getpass
import sys

from mlflow.exceptions import MlflowException

from price_platform.registry.manual_checks import ManualContext
from price_platform.registry.announce import announce_champion
from price_platform.registry.champion import ARTIFACT_ERRORS
from price_platform.registry.promotion import PromotionRefused, promote
from price_platform.settings import get_settings
from price_platform.training.dataset import TrainingDataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="registered model version to promote")
    parser.add_argument("--reason", default="promoted by hand", help="why (written to model_registry.deployments)")
    parser.add_argument("--actor", default=getpass.getuser(), help="who (default: the current user)")


def run(args: argparse.Namespace) -> int:
    context = ManualContext.from_settings(get_settings())
    registry = context.registry
    try:
        row = promote(
            registry.tracking_uri,
            registry.model_name,
            args.version,
            dsn=context.warehouse.dsn,
            actor=args.actor,
            reason=args.reason,
            check=context.promotion_check(args.version),
        )
    except (PromotionRefused, TrainingDataError, MlflowException, *ARTIFACT_ERRORS) as error:
        print(error, file=sys.stderr)
        return 1
    announce_champion(registry.redis_url, registry.model_name, row.to_version)
    print(f"{registry.model_name} version {row.to_version} is the champion (was {row.from_version or 'none'}): {row.reason}")
    return 0
