"""``price-platform promote VERSION`` and ``price-platform rollback``: the champion alias moved by hand.

Both apply the checks of the gate on the current holdout of the features, and every version is loaded with
its artifact verified against the digests recorded at registration.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.registry.announce import announce_champion
from price_platform.registry.champion import ARTIFACT_ERRORS, load_rival, load_version
from price_platform.registry.promotion import (
    Check,
    PromotionRefused,
    Verdict,
    promote,
    rollback,
)
from price_platform.settings import Settings, get_settings
from price_platform.training.dataset import TrainingDataError, read_features, split
from price_platform.training.evaluation import evaluate
from price_platform.warehouse import platform_server


@dataclass(frozen=True)
class ManualContext:
    """Where a person's promotion, rollback or rollout step reads and writes: registry, database and holdout rows."""

    settings: Settings
    spec: DatasetSpec
    dsn: str
    engine: sa.Engine

    @classmethod
    def from_settings(cls, settings: Settings) -> ManualContext:
        server = platform_server(settings)
        return cls(settings, load_dataset(settings.dataset), server.dsn(), sa.create_engine(server.url()))

    def holdout(self) -> pd.DataFrame:
        """The holdout window of the features as they are now."""
        data = split(
            read_features(self.engine, self.spec),
            self.spec,
            holdout_months=self.settings.holdout_months,
            validation_months=self.settings.validation_months,
            seed=self.settings.seed,
        )
        return data.holdout

    def promotion_check(self, version: str) -> Check:
        """The gate: ``version`` behaves and beats the champion on the holdout by the margin."""
        uri, name = self.settings.tracking_uri, self.settings.model_name

        def check(champion: str | None) -> Verdict:
            current = load_rival(uri, name, champion, dsn=self.dsn)
            result = evaluate(self.spec, self.holdout(), load_version(uri, name, version, dsn=self.dsn), current)
            return result.verdict(self.settings.promotion_margin)

        return check

    def rollback_check(self) -> Check:
        """The version coming back behaves and has finite metrics on the holdout."""

        def check(target: str | None) -> Verdict:
            assert target is not None
            model = load_version(self.settings.tracking_uri, self.settings.model_name, target, dsn=self.dsn)
            return evaluate(self.spec, self.holdout(), model, None).verdict(self.settings.promotion_margin)

        return check


def _audit_arguments(parser: argparse.ArgumentParser, reason: str) -> None:
    parser.add_argument("--reason", default=reason, help="why (written to model_registry.deployments)")
    parser.add_argument("--actor", default=getpass.getuser(), help="who (default: the current user)")


def add_promote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="registered model version to promote")
    _audit_arguments(parser, "promoted by hand")


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    _audit_arguments(parser, "rolled back by hand")


def run_promote(args: argparse.Namespace) -> int:
    """Make ``args.version`` the champion when it passes the gate's checks."""
    context = ManualContext.from_settings(get_settings())
    settings = context.settings
    try:
        row = promote(
            settings.tracking_uri, settings.model_name, args.version, dsn=context.dsn, actor=args.actor,
            reason=args.reason, check=context.promotion_check(args.version),
        )
    except (PromotionRefused, TrainingDataError, MlflowException, *ARTIFACT_ERRORS) as error:
        print(error, file=sys.stderr)
        return 1
    announce_champion(settings.redis_url, settings.model_name, row.to_version)
    print(f"{settings.model_name} version {row.to_version} is the champion (was {row.from_version or 'none'}): {row.reason}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Give the champion alias back to the version the current champion replaced."""
    context = ManualContext.from_settings(get_settings())
    settings = context.settings
    try:
        row = rollback(
            settings.tracking_uri, settings.model_name, dsn=context.dsn, actor=args.actor, reason=args.reason,
            check=context.rollback_check(),
        )
    except (PromotionRefused, TrainingDataError, MlflowException, *ARTIFACT_ERRORS) as error:
        print(error, file=sys.stderr)
        return 1
    announce_champion(settings.redis_url, settings.model_name, row.to_version)
    print(f"{settings.model_name} rolled back from version {row.from_version} to {row.to_version}: {row.reason}")
    return 0
