"""The demo's reading of a failed initial backfill (only a refusal that kept an earlier champion is fine) and of --shock."""

from datetime import UTC, datetime

import pytest

from price_platform.demo import DemoError, kept_champion, shocked_month

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


def test_the_shocked_month_is_counted_from_one_and_zero_means_none() -> None:
    months = ["2009-01", "2009-02", "2009-03"]
    assert shocked_month(months, 1) == "2009-01" and shocked_month(months, 3) == "2009-03"
    assert shocked_month(months, 0) is None


@pytest.mark.parametrize("number", [-1, 4])
def test_a_shock_outside_the_replay_is_refused_naming_the_months(number: int) -> None:
    with pytest.raises(DemoError, match=rf"--shock {number}: the replay has 3 months \(2009-01 .. 2009-03\); give 1 to 3, or 0 for none"):
        shocked_month(["2009-01", "2009-02", "2009-03"], number)
