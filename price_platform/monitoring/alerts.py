"""Alerts of the pipeline: a log line always, and a JSON POST to ``alert_webhook_url`` when set."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger("price_platform.alerts")


def send_alert(title: str, detail: Mapping[str, Any], webhook_url: str | None, *, timeout: float = 5.0) -> bool:
    """Log the alert at ERROR level and post it to the webhook; return whether the webhook took it.

    A webhook that is down or answers an error is logged and does not raise: the alert is
    already in the log, and the caller's run must not fail because a chat service did.
    """
    log.error("ALERT %s: %s", title, dict(detail))
    if not webhook_url:
        return False
    try:
        response = httpx.post(webhook_url, json={"title": title, "detail": dict(detail)}, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as error:
        log.error("alert webhook %s failed: %s", webhook_url, error)
        return False
    return True
