"""The sequential gate: promote the ``challenger``, roll it back, or wait, from paired live errors.

One evaluation reads every pair of the current challenger and champion (see
:mod:`price_platform.rollout.pairs`), runs :class:`~price_platform.rollout.sequential.SequentialTest`
on them and acts through the registry's own functions, so the audit trail is today's:

- **promote**: :func:`price_platform.registry.promotion.promote` with a check that passes only
  while the champion is still the one the errors were paired with (``promote`` holds its
  advisory lock and writes the ``promote`` row);
- **roll back**: the challenger leaves live traffic (canary share 0, aliases ``challenger`` and
  ``shadow`` removed when they hold it) and :func:`~price_platform.registry.promotion.record_refusal`
  writes its ``refuse`` row;
- **wait**: the state row is updated with the figures so far.

The state is one row of ``model_registry.rollouts`` per (challenger, champion). An evaluation
holds a PostgreSQL advisory lock per model name from before it reads the aliases until its row
is written: two gates deciding at once are applied one after the other, and the second finds
the decision taken (the challenger gone, or the row decided) and does nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from price_platform.registry import CHALLENGER, CHAMPION, tracking
from price_platform.registry.promotion import PromotionRefused, Verdict, promote, record_refusal
from price_platform.rollout import pairs as paired
from price_platform.rollout.sequential import Decision, Outcome, SequentialTest
from price_platform.rollout.traffic import end_rollout
from price_platform.warehouse import connect

WAITING, PROMOTED, ROLLED_BACK, REFUSED = "waiting", "promoted", "rolled_back", "refused"
#: First key of the advisory lock an evaluation holds (the second is the model name's hash).
GATE_LOCK = 7_310_004


@dataclass(frozen=True)
class GateState:
    """One rollout's state after an evaluation; ``acted`` says whether this evaluation took the decision."""

    model_name: str
    challenger: str
    champion: str
    status: str
    pairs: int
    reason: str
    acted: bool = False
    deployment_id: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate(
    tracking_uri: str,
    model_name: str,
    *,
    dsn: str,
    test: SequentialTest,
    actor: str,
    dagster_run_id: str | None = None,
) -> GateState | None:
    """Judge the current challenger against the current champion; ``None`` when either alias is unset."""
    mlflow_client = tracking.client(tracking_uri)
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (GATE_LOCK, model_name))
        challenger = tracking.version_by_alias(mlflow_client, model_name, CHALLENGER)
        champion = tracking.version_by_alias(mlflow_client, model_name, CHAMPION)
        if challenger is None or champion is None or challenger.version == champion.version:
            return None
        challenger_version, champion_version = str(challenger.version), str(champion.version)
        cursor.execute(
            "insert into model_registry.rollouts (model_name, challenger_version, champion_version, status)"
            " values (%s, %s, %s, %s) on conflict (model_name, challenger_version, champion_version) do nothing",
            (model_name, challenger_version, champion_version, WAITING),
        )
        cursor.execute(
            "select id, status, pairs, reason, deployment_id, metrics from model_registry.rollouts"
            " where model_name = %s and challenger_version = %s and champion_version = %s",
            (model_name, challenger_version, champion_version),
        )
        row_id, status, pairs, reason, deployment_id, metrics = cursor.fetchone()
        if status != WAITING:
            return GateState(model_name, challenger_version, champion_version, status, pairs, reason,
                             deployment_id=deployment_id, metrics=metrics)
        found = paired.paired_predictions(connection, champion_version, challenger_version)
        outcome = test.decide(paired.differences(found))
        decided = found.head(outcome.pairs)
        figures = {
            **outcome.as_metrics(),
            "champion_live_rmsle": paired.rmsle(decided, "champion"),
            "challenger_live_rmsle": paired.rmsle(decided, "challenger"),
        }
        state = _act(tracking_uri, model_name, dsn, challenger_version, champion_version, outcome, figures,
                     actor, dagster_run_id)
        cursor.execute(
            "update model_registry.rollouts set status = %s, pairs = %s, metrics = %s, reason = %s,"
            " deployment_id = %s, decided_at = case when %s <> 'waiting' then now() end where id = %s",
            (state.status, state.pairs, json.dumps(_finite(figures)), state.reason, state.deployment_id,
             state.status, row_id),
        )
    return state


def _act(
    tracking_uri: str,
    model_name: str,
    dsn: str,
    challenger: str,
    champion: str,
    outcome: Outcome,
    figures: dict[str, float],
    actor: str,
    dagster_run_id: str | None,
) -> GateState:
    summary = (
        f"live RMSLE {figures['challenger_live_rmsle']:.5f} vs champion's {figures['champion_live_rmsle']:.5f}"
        f" on {outcome.pairs} paired requests; confidence sequence of the squared-log-error difference"
        f" [{outcome.lower:.3g}, {outcome.upper:.3g}]"
    )
    base = dict(model_name=model_name, challenger=challenger, champion=champion, pairs=outcome.pairs,
                metrics=figures)
    if outcome.decision is Decision.WAIT:
        return GateState(status=WAITING, reason=f"waiting: {summary}" if outcome.pairs else "waiting: no pairs yet",
                         **base)
    if outcome.decision is Decision.PROMOTE:

        def still_the_champion(current: str | None) -> Verdict:
            if current != champion:
                return Verdict(False, f"the champion moved to {current} since the errors were paired with {champion}")
            return Verdict(True, f"better: {summary}", _finite(figures))

        try:
            row = promote(tracking_uri, model_name, challenger, dsn=dsn, actor=actor, reason="sequential gate",
                          check=still_the_champion, dagster_run_id=dagster_run_id)
        except PromotionRefused as error:
            return GateState(status=REFUSED, reason=str(error), acted=True, **base)
        end_rollout(tracking_uri, model_name, challenger)
        return GateState(status=PROMOTED, reason=row.reason, acted=True, deployment_id=row.id, **base)
    why = "not shown better within the budget" if outcome.upper >= 0 else "worse"
    end_rollout(tracking_uri, model_name, challenger)
    row = record_refusal(dsn, model_name, challenger, Verdict(False, f"{why}: {summary}",
                                                               _finite(figures)),
                         champion=champion, actor=actor, reason="sequential gate", dagster_run_id=dagster_run_id)
    return GateState(status=ROLLED_BACK, reason=row.reason, acted=True, deployment_id=row.id, **base)


def _finite(figures: dict[str, float]) -> dict[str, float]:
    """The figures that are numbers (JSON has no NaN)."""
    return {name: value for name, value in figures.items() if value == value}
