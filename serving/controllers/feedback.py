"""``POST /feedback``: the price a predicted record actually sold for.

Only the key that asked for a prediction (or an ``admin`` key) may report its actual price, so
that no other caller can skew the live accuracy: the prediction's ``key_id`` is read from the
prediction log.
"""

from __future__ import annotations

import asyncio
import uuid

from litestar import Controller, Request, post
from litestar.exceptions import NotFoundException, PermissionDeniedException, ServiceUnavailableException

from price_platform.warehouse import connect
from serving.dependencies import PlatformDsn, PredictionLogWriter, Schemas
from serving.guards import requires
from serving.openapi import ERRORS, json_body
from serving.schemas import FeedbackAccepted, decode


class FeedbackController(Controller):
    """Actual prices, written to ``monitoring.actuals`` with the prediction logs."""

    tags = ["predictions"]
    before_request = requires("predict")

    @post(
        "/feedback",
        status_code=202,
        operation_class=json_body("Feedback", "The prediction id and the actual price."),
        summary="Report the actual price for a prediction id",
        opt={ERRORS: {503: "The feedback buffer is full (`Retry-After` says when to try again)."}},
    )
    async def feedback(
        self, request: Request, schemas: Schemas, prediction_log: PredictionLogWriter, dsn: PlatformDsn
    ) -> FeedbackAccepted:
        body = decode(schemas.feedback_decoder, await request.body())
        principal = request.state.principal
        if principal.role != "admin":
            await _check_owner(dsn, body.prediction_id, principal.key_id)
        if not prediction_log.add_actual(body.prediction_id, body.actual):
            raise ServiceUnavailableException("the feedback buffer is full; try again later", headers={"Retry-After": "5"})
        return FeedbackAccepted(prediction_id=body.prediction_id, status="accepted")


async def _check_owner(dsn: str | None, prediction_id: uuid.UUID, key_id: str | None) -> None:
    """Raise unless the logged prediction ``prediction_id`` was made with the key ``key_id``."""
    if dsn is None:
        raise ServiceUnavailableException("no prediction log to check who made this prediction")
    found = await asyncio.to_thread(_owner, dsn, prediction_id)
    if found is None:
        raise NotFoundException(
            f"no logged prediction {prediction_id} (a prediction is logged within seconds of its answer; try again)"
        )
    if found[0] != key_id:
        raise PermissionDeniedException(f"prediction {prediction_id} was made with another API key")


def _owner(dsn: str, prediction_id: uuid.UUID) -> tuple[str | None] | None:
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("select key_id from monitoring.predictions where prediction_id = %s limit 1", (str(prediction_id),))
        return cursor.fetchone()
