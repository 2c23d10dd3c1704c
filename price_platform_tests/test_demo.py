"""The demo's reading of a failed initial backfill: only a refusal that kept an earlier champion is fine."""

from datetime import UTC, datetime

from price_platform.demo import kept_champion

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def row(action: str, reason: str) -> tuple:
    return (NOW, action, "3", "4", reason, {})


def test_a_refusal_that_kept_an_earlier_champion_is_reported() -> None:
    decided = [row("refuse", "holdout_rmsle 0.14000 does not beat champion's 0.13500 by 0.0%")]
    assert kept_champion("3", decided) == "holdout_rmsle 0.14000 does not beat champion's 0.13500 by 0.0%"


def test_a_failed_backfill_without_an_earlier_champion_is_a_failure() -> None:
    assert kept_champion(None, [row("refuse", "version 1 has no holdout_rmsle metric")]) is None


def test_a_failed_backfill_without_a_refusal_is_a_failure() -> None:
    assert kept_champion("3", []) is None
    assert kept_champion("3", [row("promote", "no champion yet")]) is None
