"""Alerts of the pipeline: a log line always, and a JSON POST to ``alert_webhook_url`` when set."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger("price_platform.alerts")


def send_alert(title: str, detail: Mapping[str, Any], webhook_url: str | None, *, timeout: float = 5.0) -> bool:
    """Log the alert at ERROR level and post it to the webhook; return whether the webhook took it.

    A webhook that is down or answers an error is logged and does not raise: the alert is
    already in the log, and the caller's run must not fail because a chat service did. The
    log names the webhook by scheme and host only: its path and query often hold a token.
    """
    log.error("ALERT %s: %s", title, dict(detail))
    if not webhook_url:
        return False
    try:
        response = httpx.post(webhook_url, json={"title": title, "detail": dict(detail)}, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as error:
        reason = f"answered {error.response.status_code}" if isinstance(error, httpx.HTTPStatusError) else type(error).__name__
        log.error("alert webhook %s failed: %s", redacted_url(webhook_url), reason)
        return False
    return True


def redacted_url(url: str) -> str:
    """``url`` reduced to scheme, host and port (``https://hooks.example.com/…``): what a log may show of a webhook."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/…"
