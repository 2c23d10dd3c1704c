"""``POST /feedback``: the price a predicted record actually sold for."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.exceptions import ServiceUnavailableException, ValidationException

from serving.guards import requires
from serving.openapi import json_body
from serving.schemas import FeedbackAccepted, InvalidInput, decode
from serving.services import Services


class FeedbackController(Controller):
    """Actual prices, written to ``monitoring.actuals`` with the prediction logs."""

    tags = ["predictions"]
    before_request = requires("predict")

    @post(
        "/feedback",
        status_code=202,
        operation_class=json_body("Feedback", "The prediction id and the actual price."),
        summary="Report the actual price for a prediction id",
    )
    async def feedback(self, request: Request, services: Services) -> FeedbackAccepted:
        try:
            body = decode(services.schemas.feedback_decoder, await request.body())
        except InvalidInput as error:
            raise ValidationException(str(error), extra={"record": error.record, "field": error.field}) from None
        if not services.log.add_actual(body.prediction_id, body.actual):
            raise ServiceUnavailableException("the feedback buffer is full; try again later", headers={"Retry-After": "5"})
        return FeedbackAccepted(prediction_id=body.prediction_id, status="accepted")
