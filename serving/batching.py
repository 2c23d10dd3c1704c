"""One-record predictions that reach the model in the same event-loop turn are predicted in one call.

Under concurrent load many one-record requests are decoded while the model is busy with
the previous ones. Each of them queues its row here; the first schedules a flush at the end
of the loop turn (no timer, so a lone request waits for nothing), and the flush predicts all
queued rows of one model in one call on the event loop. The trees' fixed per-call cost is
then paid once per turn instead of once per request, and every request gets exactly the
price a call with its row alone would give (rows are independent).
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.model_store import LoadedModel


class MicroBatcher:
    """Collects single rows per model during a loop turn and predicts them together."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[LoadedModel, list[tuple[Any, ...]], list[asyncio.Future]]] = {}

    async def predict(self, model: LoadedModel, row: tuple[Any, ...]) -> float:
        """The model's price for ``row`` (a float, checked by the caller)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        queued = self._pending.setdefault(id(model), (model, [], []))
        queued[1].append(row)
        queued[2].append(waiter)
        return await waiter

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for model, rows, waiters in pending.values():
            try:
                prices = model.predict(rows).tolist()
            except Exception as error:  # noqa: BLE001 (then one row at a time: only the request at fault fails)
                if len(rows) == 1:
                    if not waiters[0].done():
                        waiters[0].set_exception(error)
                    continue
                for waiter, row in zip(waiters, rows, strict=True):
                    _settle(waiter, model, row)
                continue
            for waiter, price in zip(waiters, prices, strict=True):
                if not waiter.done():
                    waiter.set_result(price)


def _settle(waiter: asyncio.Future, model: LoadedModel, row: tuple[Any, ...]) -> None:
    """Predict one row alone and hand its price or its error to its request."""
    if waiter.done():
        return
    try:
        waiter.set_result(model.predict([row]).tolist()[0])
    except Exception as error:  # noqa: BLE001 (the request's own error, raised in its handler)
        waiter.set_exception(error)
