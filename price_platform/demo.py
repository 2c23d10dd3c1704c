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

**Safe rollout.** The demo's platform runs with ``rollout_after_retrain``: the drift retrain's
challenger, when it beats the champion on the holdout, is not promoted at once. Each replayed
month's sales are sent to ``/predict`` (one record a request) and their prices to ``/feedback``
(:mod:`price_platform.rollout.live_traffic`). Once the retrain has left a challenger, the demo
points the alias ``shadow`` at it (what ``price-platform rollout shadow`` does) and launches the
``canary_rollout`` job with the asset config a user would give: ``offline_replay`` over the
requests logged since the replay started (its blocking check stops the canary when the
challenger replays worse), then ``canary`` with ``--canary-share``. The later months' traffic
gives the shadow's and the canary's paired live errors; the daemon's ``gate_on_feedback`` sensor
runs the sequential gate, which promotes the challenger, rolls it back, or keeps waiting.
``--worse-challenger`` replaces the retrain's challenger by its pipeline refitted on prices
times :data:`~price_platform.rollout.mislabeled.LABEL_FACTOR` (a label bug, registered past the
holdout gate on purpose): the sequential gate rolls it back on its live errors. The offline
replay blocks its canary first unless the replayed period favours higher prices (a replay of
only the shocked month, whose prices are x1.8, does). The summary prints every step and the
gate's decision.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pandas as pd
import sqlalchemy as sa
from tqdm import tqdm

from price_platform.datasets import DatasetSpec, load_dataset
from price_platform.launcher import ProgressConsole, Stack
from price_platform.modeling import read_sample
from price_platform.monitoring.replay import (
    SHOCK_FACTOR,
    MonthOutcome,
    ReplayError,
    decisions,
    months_of,
    months_to_replay,
    replay,
    summary,
)
from price_platform.registry import tracking
from price_platform.registry.champion import champion_version
from price_platform.rollout import gate, pairs, traffic
from price_platform.rollout.live_traffic import TrafficReport, send_sales
from price_platform.rollout.mislabeled import LABEL_FACTOR, register_mislabeled
from price_platform.settings import Settings, get_settings
from price_platform.warehouse import connect

#: The Dagster job that replays the challenger offline and, if its check passes, sets the canary share.
CANARY_JOB = "canary_rollout"
#: The gate is tuned for about the pairs the demo's later months give (the default 2,000 is for real traffic).
DEMO_GATE_TUNED_FOR = 300
#: Seconds to wait, after the last feedback, for the gate to have judged every pair.
GATE_WAIT = 300.0

LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }"""
RUN_RESULT = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status
    assetMaterializations { assetKey { path } metadataEntries { label __typename
        ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue }
        ... on TextMetadataEntry { text } } } } } }"""
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}


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


def model_info(stack: Stack) -> dict:
    """The API's ``/model-info``, or an empty dict while it is not ready."""
    try:
        response = httpx.get(f"{stack.api_url}/model-info", timeout=10)
    except httpx.HTTPError:
        return {}
    return response.json() if response.status_code == 200 else {}


def api_version(stack: Stack) -> str | None:
    """The model version the API serves, or None while it is not ready."""
    return model_info(stack).get("version")


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


def holdout_refusal(version: str, decided: list[tuple]) -> str | None:
    """The holdout gate's reason when it refused ``version`` (a ``refuse`` row to it), else ``None``."""
    refusals = [reason for _, action, _, new, reason, _ in decided if action == "refuse" and str(new) == version]
    return refusals[-1] if refusals else None


def canary_run_config(start: datetime, end: datetime, share: float) -> dict[str, object]:
    """The ``canary_rollout`` job's asset config: the period ``offline_replay`` replays and the ``canary`` share."""
    return {"ops": {"offline_replay": {"config": {"start": start.isoformat(), "end": end.isoformat()}},
                    "canary": {"config": {"share": share}}}}


def replay_step(metadata: dict[str, object], canary_share: float) -> str:
    """The summary line of the offline replay, from ``offline_replay``'s metadata and the canary share it led to."""
    if not metadata:
        return "offline replay: no result (see the canary_rollout run in Dagster)"
    requests = int(metadata.get("requests", 0))
    if requests == 0:
        figures = "no logged request with a price in the period: nothing to replay"
    else:
        figures = (f"RMSLE {float(metadata['challenger_rmsle']):.5f} vs {float(metadata['champion_rmsle']):.5f}"
                   f" answered by {versions(str(metadata.get('answered_by', '')))} on {requests} logged requests"
                   " with their prices")
    verdict = (f"not worse: canary share {canary_share:.0%}" if canary_share > 0
               else "worse: the blocking check replay_not_worse stopped the canary")
    return f"offline replay of v{metadata.get('challenger_version')}: {figures}; {verdict}"


def versions(listed: str) -> str:
    """``"1, 2"`` (``offline_replay``'s ``answered_by``) as ``"v1, v2"``."""
    return ", ".join(f"v{version.strip()}" for version in listed.split(",") if version.strip()) or "none"


def gate_step(state: tuple[str, int, str, dict] | None, challenger: str, champion: str) -> str:
    """The summary line of the sequential gate from its ``model_registry.rollouts`` row (status, pairs, reason, metrics)."""
    if state is None:
        return f"sequential gate: never judged v{challenger} against v{champion} (no paired feedback reached it)"
    status, pair_count, reason, _ = state
    verdicts = {gate.PROMOTED: f"promoted v{challenger} to champion", gate.ROLLED_BACK: f"rolled v{challenger} back",
                gate.REFUSED: f"refused to promote v{challenger}", gate.WAITING: f"still waiting on v{challenger}"}
    return f"sequential gate: {verdicts.get(status, status)} after {pair_count} pairs; {reason.removeprefix('sequential gate: ')}"


def gate_settled(status: str | None, seen: int, available: int) -> bool:
    """Whether the gate has decided, or has judged every pair the database holds so far."""
    return status is not None and (status != gate.WAITING or (available > 0 and seen >= available))


@dataclass
class LiveRollout:
    """The demo's live path: each month's traffic and feedback, and the rollout of the drift retrain's challenger."""

    stack: Stack
    settings: Settings
    spec: DatasetSpec
    since: datetime
    share: float
    worse: bool
    timeout: float
    steps: list[str] = field(default_factory=list)
    drift_month: str | None = None
    challenger: str | None = None
    champion: str | None = None
    total: TrafficReport = field(default_factory=TrafficReport)

    @property
    def uri(self) -> str:
        return self.stack.tracking_uri

    @property
    def dsn(self) -> str:
        return self.stack.server.dsn()

    def after_month(self, month: str, sales: pd.DataFrame, outcome: MonthOutcome) -> str:
        """Send the month's sales and prices to the API; after a drift, wait for the retrain and roll out its challenger."""
        with httpx.Client(base_url=self.stack.api_url, timeout=30) as client:
            sent = send_sales(client, self.spec, sales)
        self.total = self.total + sent
        if outcome.drift_detected and self.drift_month is None:  # the first drift's retrain is the one rolled out
            self.drift_month = month
            self.after_drift(month)
        return sent.describe()

    def after_drift(self, month: str) -> None:
        """Wait for the retrain the drift asked for; when its challenger beat the champion, start its rollout."""
        champion = champion_version(self.uri, self.settings.model_name)
        before = latest_version(self.uri, self.settings.model_name)
        wait_for(f"retrain after the drift of {month}",
                 lambda: latest_version(self.uri, self.settings.model_name) != before and self.stack.active_runs() == 0,
                 self.timeout)
        candidate = latest_version(self.uri, self.settings.model_name)
        assert candidate is not None and champion is not None
        refusal = holdout_refusal(candidate, decisions(self.dsn, self.settings.model_name, self.since))
        if refusal is not None:
            self.steps.append(f"drift retrain after {month}: v{candidate} refused by the holdout gate ({refusal});"
                              " nothing to roll out")
            return
        self.steps.append(f"drift retrain after {month}: v{candidate} beats champion v{champion} on the holdout;"
                          " left as challenger (rollout_after_retrain)")
        if self.worse:
            engine = sa.create_engine(self.stack.server.url())
            try:
                made = register_mislabeled(self.uri, self.settings.model_name, candidate, dsn=self.dsn, engine=engine,
                                           spec=self.spec)
            finally:
                engine.dispose()
            self.steps.append(f"worse on purpose: v{made.version} = v{candidate} refitted on prices x{LABEL_FACTOR:g},"
                              " registered as challenger past the holdout gate")
            candidate = made.version
        self.challenger, self.champion = candidate, champion
        self.start_rollout()

    def start_rollout(self) -> None:
        """Shadow, then the ``canary_rollout`` job (offline replay, its blocking check, the canary share)."""
        assert self.challenger is not None
        name = self.settings.model_name
        traffic.set_shadow(self.uri, name, self.challenger, dsn=self.dsn, actor="demo")
        self.steps.append(f"shadow: alias shadow -> v{self.challenger} (price-platform rollout shadow"
                          f" {self.challenger}); it scores every request off the request path")
        metadata = run_canary_job(self.stack, canary_run_config(self.since, datetime.now(UTC), self.share),
                                  self.timeout)
        state = traffic.current(self.uri, name)
        self.steps.append(replay_step(metadata, state.canary_share))
        wanted_canary = self.challenger if state.canary_share > 0 else None
        wait_for("API loads the shadow and the canary",
                 lambda: serves_rollout(model_info(self.stack), self.challenger, wanted_canary), self.timeout, poll=2.0)

    def judge(self) -> None:
        """Wait until the gate's sensor has judged every pair (or decided); add its verdict to the steps."""
        if self.challenger is None or self.champion is None:
            return
        deadline = time.monotonic() + GATE_WAIT
        with tqdm(desc="sequential gate judges the pairs", unit="s", bar_format="{desc}: {elapsed}") as bar:
            while True:
                state = rollout_state(self.dsn, self.settings.model_name, self.challenger, self.champion)
                seen = int(state[3].get("pairs_seen", state[1])) if state else 0
                if gate_settled(state[0] if state else None, seen, self.pairs_available()) or time.monotonic() > deadline:
                    break
                time.sleep(5)
                bar.update(5)
        self.steps.append(f"live traffic in all: {self.total.describe()}")
        self.steps.append(gate_step(state, self.challenger, self.champion))

    def pairs_available(self) -> int:
        with connect(self.dsn) as connection:
            return len(pairs.paired_predictions(connection, self.champion, self.challenger))


def latest_version(tracking_uri: str, model_name: str) -> str | None:
    """The newest registered version of ``model_name`` (None before the first)."""
    found = tracking.client(tracking_uri).search_model_versions(f"name = '{model_name}'")
    return max((str(v.version) for v in found), key=int, default=None)


def serves_rollout(info: dict, shadow: str, canary: str | None) -> bool:
    """Whether ``/model-info`` shows ``shadow`` loaded as the shadow and ``canary`` (or none) as the canary."""
    rollout = info.get("rollout") or {}
    return rollout.get("shadow_version") == shadow and rollout.get("canary_version") == canary


def rollout_state(dsn: str, model_name: str, challenger: str, champion: str) -> tuple[str, int, str, dict] | None:
    """The gate's row for (challenger, champion): status, pairs, reason, metrics; None before its first evaluation."""
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select status, pairs, reason, metrics from model_registry.rollouts"
                       " where model_name = %s and challenger_version = %s and champion_version = %s",
                       (model_name, challenger, champion))
        return cursor.fetchone()


def run_canary_job(stack: Stack, run_config: dict[str, object], timeout: float) -> dict[str, object]:
    """Launch ``canary_rollout`` with ``run_config``, wait for it, return ``offline_replay``'s metadata."""
    selector = {"repositoryLocationName": "price_platform", "repositoryName": "__repository__", "jobName": CANARY_JOB}
    launched = dagster_graphql(stack, LAUNCH_RUN, {"params": {"selector": selector, "runConfigData": run_config}})
    outcome = launched["launchRun"]
    if outcome["__typename"] != "LaunchRunSuccess":
        raise DemoError(f"Dagster refused the {CANARY_JOB} run: {outcome}")
    run_id = outcome["run"]["runId"]
    deadline = time.monotonic() + timeout
    while (result := dagster_graphql(stack, RUN_RESULT, {"id": run_id})["runOrError"]).get("status") not in RUN_DONE:
        if time.monotonic() > deadline:
            raise DemoError(f"{CANARY_JOB} run {run_id}: not done after {timeout:.0f} s")
        time.sleep(2)
    return replay_metadata(result.get("assetMaterializations") or [])


def replay_metadata(materializations: list[dict]) -> dict[str, object]:
    """``offline_replay``'s metadata entries (label: value) from a run's materializations."""
    for event in materializations:
        if event["assetKey"]["path"] == ["offline_replay"]:
            return {entry["label"]: next((entry[key] for key in ("floatValue", "intValue", "text") if key in entry), None)
                    for entry in event["metadataEntries"]}
    return {}


def dagster_graphql(stack: Stack, query: str, variables: dict[str, object]) -> dict:
    response = httpx.post(f"{stack.dagster_url}/graphql", json={"query": query, "variables": variables}, timeout=300)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise DemoError(f"Dagster GraphQL error: {body['errors']}")
    return body["data"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-until", default="2008-12", help="last month of the initial backfill, YYYY-MM")
    parser.add_argument("--months", type=int, default=12, help="months of history to replay after it")
    parser.add_argument("--shock", type=int, default=6, metavar="N",
                        help=f"multiply the prices of the N-th replayed month by {SHOCK_FACTOR:g} (0: none)")
    parser.add_argument("--canary-share", type=float, default=0.1,
                        help="share of requests the drift retrain's challenger answers once its replay passed")
    parser.add_argument("--worse-challenger", action="store_true",
                        help=f"roll out the retrain's challenger refitted on prices x{LABEL_FACTOR:g} (the gate should"
                        " roll it back)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each stage may take")


def run(args: argparse.Namespace) -> int:
    try:
        return play(args)
    except DemoError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


def play(args: argparse.Namespace) -> int:
    """Run the demo; raise :class:`DemoError` naming the stage that did not finish."""
    settings = get_settings().model_copy(update={"auth_enabled": False, "rollout_after_retrain": True,
                                                 "rollout_tuned_for": DEMO_GATE_TUNED_FOR})
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
        spec = load_dataset(settings.dataset)
        live = LiveRollout(stack, settings, spec, datetime.now(UTC), args.canary_share, args.worse_challenger,
                           args.timeout)
        try:
            chosen = months_to_replay(months_of(spec, read_sample(spec)), stack.server.dsn(), args.months)
            outcomes = replay(settings, stack.server.dsn(), args.months, chosen[0], timeout=args.timeout,
                              shock=shocked_month(chosen, args.shock), after_month=live.after_month)
        except ReplayError as error:
            raise DemoError(str(error)) from error
        live.judge()
        wait_for("retraining runs settle", lambda: stack.active_runs() == 0, args.timeout)
        final = champion_version(stack.tracking_uri, settings.model_name)
        wait_for("API follows the champion", lambda: api_version(stack) == final, args.timeout)
        print()
        print(summary(outcomes, decisions(stack.server.dsn(), settings.model_name, started)))
        print("\nsafe rollout:" if live.steps else "\nsafe rollout: no drift retrain left a challenger")
        for number, step in enumerate(live.steps, 1):
            print(f"  {number}. {step}")
        print(f"\nfirst champion v{first}; champion now v{final}; the API serves v{api_version(stack)}")
    return 0
