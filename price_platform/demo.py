"""``price-platform demo`` (``make demo``): the whole loop, headless, then exit 0.

Starts the local stack (embedded defaults), backfills the sales up to ``--train-until``
(2008-12: a platform trained on 2006-2008), waits until Dagster has ingested, validated,
built features, trained and promoted a champion (in a home that already has one, the
gate may instead refuse a worse challenger and keep it) and the API serves it, replays the next
``--months`` months of history through the landing folder (drift, retraining, promotion or
refusal, all by the Dagster daemon's sensors), waits for the runs to settle and prints a
summary of drift, registry decisions, holdout errors and the version the API ends on. The real
months hardly drift, so the prices of the ``--shock``-th replayed month are multiplied by
:data:`~price_platform.monitoring.replay.SHOCK_FACTOR`: a market jump the drift sensor should
answer with a retrain.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from tqdm import tqdm

from price_platform.datasets import load_dataset
from price_platform.launcher import ProgressConsole, Stack
from price_platform.modeling import read_sample
from price_platform.monitoring.replay import (
    SHOCK_FACTOR,
    ReplayError,
    decisions,
    months_of,
    months_to_replay,
    replay,
    summary,
)
from price_platform.registry.champion import champion_version
from price_platform.settings import get_settings


class DemoError(RuntimeError):
    """A stage of the demo that did not finish, with where to look."""


def wait_for(what: str, ready: Callable[[], bool], timeout: float, poll: float = 5.0) -> None:
    """Poll ``ready()`` until it is true, with a progress line; raise :class:`DemoError` on timeout."""
    deadline = time.monotonic() + timeout
    with tqdm(desc=what, unit="s", bar_format="{desc}: {elapsed}") as bar:
        while not ready():
            if time.monotonic() > deadline:
                raise DemoError(f"{what}: not done after {timeout:.0f} s")
            time.sleep(poll)
            bar.update(poll)


def api_version(stack: Stack) -> str | None:
    """The model version the API serves, or None while it is not ready."""
    try:
        response = httpx.get(f"{stack.api_url}/model-info", timeout=10)
    except httpx.HTTPError:
        return None
    return response.json().get("version") if response.status_code == 200 else None


def kept_champion(earlier: str | None, decided: list[tuple]) -> str | None:
    """The reason the gate gave, when a failed backfill only means it kept an earlier champion.

    A home that already has a champion (an earlier ``make up`` or demo) can refuse the
    backfill's challenger: the blocking gate fails that run, and the better model keeps
    serving. Any other failure (no champion before, no refusal recorded) returns ``None``.
    """
    refusals = [reason for _, action, _, _, reason, _ in decided if action == "refuse"]
    return refusals[-1] if earlier is not None and refusals else None


def shocked_month(months: list[str], number: int) -> str | None:
    """The ``number``-th of the months to replay (``--shock``, counted from 1), or None for 0."""
    if number == 0:
        return None
    if not 1 <= number <= len(months):
        raise DemoError(f"--shock {number}: the replay has {len(months)} months ({months[0]} .. {months[-1]});"
                        f" give 1 to {len(months)}, or 0 for none")
    return months[number - 1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-until", default="2008-12", help="last month of the initial backfill, YYYY-MM")
    parser.add_argument("--months", type=int, default=12, help="months of history to replay after it")
    parser.add_argument("--shock", type=int, default=6, metavar="N",
                        help=f"multiply the prices of the N-th replayed month by {SHOCK_FACTOR:g} (0: none)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each stage may take")


def run(args: argparse.Namespace) -> int:
    try:
        return play(args)
    except DemoError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


def play(args: argparse.Namespace) -> int:
    """Run the demo; raise :class:`DemoError` naming the stage that did not finish."""
    settings = get_settings().model_copy(update={"auth_enabled": False})
    started = datetime.now(UTC)
    with Stack(settings) as stack:
        print(f"backfill: sales up to {args.train_until}, then features, training and promotion")
        earlier = champion_version(stack.tracking_uri, settings.model_name)
        try:
            stack.backfill(args.train_until, report=ProgressConsole(interactive=False).report)
        except RuntimeError as error:
            refusal = kept_champion(earlier, decisions(stack.server.dsn(), settings.model_name, started))
            if refusal is None:
                raise DemoError(str(error)) from error
            print(f"the backfill's challenger was refused ({refusal}); champion v{earlier}, from an earlier run"
                  f" in {settings.home}, stays")
        first = champion_version(stack.tracking_uri, settings.model_name)
        if first is None:
            raise DemoError("the backfill finished without a champion")
        wait_for("API serves the champion", lambda: api_version(stack) == first, args.timeout)
        print(f"champion v{first} serving at {stack.api_url}")
        try:
            spec = load_dataset(settings.dataset)
            chosen = months_to_replay(months_of(spec, read_sample(spec)), stack.server.dsn(), args.months)
            outcomes = replay(settings, stack.server.dsn(), args.months, chosen[0], timeout=args.timeout,
                              shock=shocked_month(chosen, args.shock))
        except ReplayError as error:
            raise DemoError(str(error)) from error
        wait_for("retraining runs settle", lambda: stack.active_runs() == 0, args.timeout)
        final = champion_version(stack.tracking_uri, settings.model_name)
        wait_for("API follows the champion", lambda: api_version(stack) == final, args.timeout)
        print()
        print(summary(outcomes, decisions(stack.server.dsn(), settings.model_name, started)))
        print(f"\nfirst champion v{first}; champion now v{final}; the API serves v{api_version(stack)}")
    return 0

