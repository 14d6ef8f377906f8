"""Log set-up: secrets never reach a log line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from aiokafka.errors import GroupCoordinatorNotAvailableError, NodeNotReadyError
from pydantic import SecretStr

from promo_bridge.observability.logging import (
    REDACTED,
    RepeatLimiter,
    StartupCoordinatorFilter,
    configure_logging,
    redact_secrets,
)


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


def test_a_storm_of_one_library_error_becomes_one_line_per_interval() -> None:
    """aiokafka's repeated connection errors pass once per interval, saying how many were held."""
    now = [0.0]
    limiter = RepeatLimiter("aiokafka", interval_s=10.0, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (), None)

    storm = [record("aiokafka.conn", "Unable connect to node %s") for _ in range(1000)]
    passed = [r for r in storm if limiter.filter(r)]
    assert len(passed) == 1
    assert limiter.filter(record("aiokafka.conn", "another message"))
    assert limiter.filter(record("promo_bridge.pipeline", "Unable connect to node %s"))
    now[0] = 10.0
    late = record("aiokafka.conn", "Unable connect to node %s")
    assert limiter.filter(late)
    assert late.msg == "Unable connect to node %s [999 more like this held back]"


def test_coordinator_not_available_is_info_during_start_up_only() -> None:
    """GroupCoordinatorNotAvailable is INFO in the grace period, ERROR after; others untouched."""
    now = [0.0]
    quiet = StartupCoordinatorFilter(grace_s=60.0, clock=lambda: now[0])

    def record(error: Exception) -> logging.LogRecord:
        name = "aiokafka.consumer.group_coordinator"
        msg = "Group Coordinator Request failed: %s"
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (error,), None)

    early = record(GroupCoordinatorNotAvailableError())
    assert quiet.filter(early)
    assert (early.levelno, early.levelname) == (logging.INFO, "INFO")
    assert early.getMessage().endswith("(expected while the broker starts; retrying)")
    other = record(NodeNotReadyError())
    assert quiet.filter(other)
    assert other.levelno == logging.ERROR
    now[0] = 61.0
    late = record(GroupCoordinatorNotAvailableError())
    assert quiet.filter(late)
    assert late.levelno == logging.ERROR


def test_request_urls_of_httpx_stay_out_of_info_logs(capsys: pytest.CaptureFixture[str]) -> None:
    """httpx's per-request INFO line (a lookup URL names the customer) is not written."""
    configure_logging("INFO", "json")
    try:
        logging.getLogger("httpx").info("HTTP Request: GET /lookup?identifierValue=919986000586")
        logging.getLogger("httpx").warning("kept")
        err = capsys.readouterr().err
        assert "919986000586" not in err
        assert "kept" in err
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
