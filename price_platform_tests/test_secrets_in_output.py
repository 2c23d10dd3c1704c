"""Secrets stay out of output: a failed webhook's URL, the database's text of a failed audit write."""

from __future__ import annotations

import logging

import httpx
import pytest
from conftest import free_port

from price_platform.monitoring.alerts import send_alert
from serving.auth import AuditUnavailable, audit


def test_a_failed_webhook_is_logged_without_its_token(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3tT0ken?token=abc123"
    with caplog.at_level(logging.ERROR, logger="price_platform.alerts"):
        assert send_alert("drift", {"feature": "x"}, url, timeout=2.0) is False
    failed = [record.getMessage() for record in caplog.records if "webhook" in record.getMessage()]
    assert failed == [f"alert webhook http://127.0.0.1:{port}/… failed: ConnectError"]
    assert "s3cr3tT0ken" not in caplog.text and "abc123" not in caplog.text


def test_a_webhook_answering_an_error_is_logged_by_status_only(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    def refuse(url: str, **_: object) -> httpx.Response:
        return httpx.Response(403, request=httpx.Request("POST", url))

    monkeypatch.setattr(httpx, "post", refuse)
    with caplog.at_level(logging.ERROR, logger="price_platform.alerts"):
        assert send_alert("drift", {}, "https://hooks.example.com/hook/s3cr3tT0ken", timeout=2.0) is False
    assert "alert webhook https://hooks.example.com/… failed: answered 403" in caplog.text
    assert "s3cr3tT0ken" not in caplog.text


def test_an_audit_write_error_names_no_database_detail(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    dsn = f"postgresql://auditor:pa55word@127.0.0.1:{port}/secret_db"
    with caplog.at_level(logging.ERROR, logger="serving.auth"), pytest.raises(AuditUnavailable) as raised:
        audit(dsn, "api-key:x", "reload", {})
    message = str(raised.value)
    assert message == "the platform database did not take it (its message is in the server log)"
    assert str(port) in caplog.text  # the operator still sees the database's own message
