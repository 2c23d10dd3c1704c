"""Live traffic with feedback: sales sent to ``/predict`` one record a request, then their prices to ``/feedback``.

What the demo's replayed months do as buyers and sellers would: each sale is priced by the
running API (the champion, or the canary for its share; a shadow scores it off the request path),
and the price it sold for comes back as feedback, so that the sequential gate gets its pairs.
One record a request, so that the canary's split (sticky per record without an API key) sees
every sale on its own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pandas as pd

from price_platform.datasets import DatasetSpec


@dataclass(frozen=True)
class TrafficReport:
    """What one batch of sales got: answers per serving version, refusals, and prices fed back."""

    answered_by: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    fed_back: int = 0

    @property
    def answered(self) -> int:
        return sum(self.answered_by.values())

    def __add__(self, other: TrafficReport) -> TrafficReport:
        return TrafficReport(self.answered_by + other.answered_by, self.refused + other.refused,
                             self.fed_back + other.fed_back)

    def describe(self) -> str:
        """``n requests (v1: a, v2: b), r refused, f prices fed back``."""
        versions = ", ".join(f"v{version}: {count}" for version, count in sorted(self.answered_by.items()))
        return (f"{self.answered} requests ({versions or 'none answered'}), {self.refused} refused,"
                f" {self.fed_back} prices fed back")


def request_bodies(spec: DatasetSpec, sales: pd.DataFrame) -> list[dict[str, object]]:
    """Each sale as the JSON record ``/predict`` takes: the data set's features, missing values as null."""
    return json.loads(sales[list(spec.features)].to_json(orient="records"))


def send_sales(client: httpx.Client, spec: DatasetSpec, sales: pd.DataFrame) -> TrafficReport:
    """Price every sale through ``/predict``, then send the price it sold for (``spec.target``) as feedback.

    ``client`` carries the API's base URL (and its key, when auth is on). A record the API
    refuses (4xx: outside the data set's ranges) is counted, not retried; any other failure raises.
    """
    answered_by: Counter[str] = Counter()
    refused = fed_back = 0
    prices = sales[spec.target].to_numpy(dtype=float)
    for body, actual in zip(request_bodies(spec, sales), prices, strict=True):
        response = client.post("/predict", json=body)
        if 400 <= response.status_code < 500:
            refused += 1
            continue
        response.raise_for_status()
        answer = response.json()["predictions"][0]
        answered_by[answer["model_version"]] += 1
        client.post("/feedback", json={"prediction_id": answer["prediction_id"], "actual": actual}).raise_for_status()
        fed_back += 1
    return TrafficReport(answered_by, refused, fed_back)
