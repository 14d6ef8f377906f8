"""Log set-up: secrets never reach a log line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from pydantic import SecretStr

from promo_bridge.observability.logging import REDACTED, configure_logging, redact_secrets


def test_redacts_secret_looking_keys() -> None:
    """Values under password/secret/token/authorization keys are replaced."""
    event = {
        "event": "x",
        "password": "p",
        "oauth_secret": "s",
        "Authorization": "Basic abc",
        "access_token": "t",
        "customer": "42",
    }
    out = redact_secrets(None, "info", event)
    assert out["password"] == REDACTED
    assert out["oauth_secret"] == REDACTED
    assert out["Authorization"] == REDACTED
    assert out["access_token"] == REDACTED
    assert out["customer"] == "42"


def test_json_lines_carry_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    """Context bound through contextvars appears on every JSON line, secrets do not."""
    configure_logging("INFO", "json")
    try:
        with structlog.contextvars.bound_contextvars(batch_id="b-1"):
            structlog.get_logger("t").info(
                "sent", password="hunter2", credentials=SecretStr("hunter3")
            )
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["batch_id"] == "b-1"
        assert record["event"] == "sent"
        assert "hunter2" not in line
        assert "hunter3" not in line
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
