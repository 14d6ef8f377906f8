"""structlog set-up: JSON lines, context bound through contextvars, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are never written, whatever logs them.
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|api[_-]?key|credential", re.I)
REDACTED = "***"


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any secret-looking key; SecretStr values are already masked."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
    return event_dict


class RepeatLimiter(logging.Filter):
    """Of the records of loggers under `prefix`, one per message template per `interval_s`.

    During a broker outage aiokafka logs the same connection error thousands of times a
    second; one line per interval says as much. The next line let through says how many like
    it were held back. Records of other loggers pass untouched.
    """

    def __init__(self, prefix: str, interval_s: float = 10.0, clock: Any = None) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval_s = interval_s
        self._clock = clock or time.monotonic
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True for the first record of a kind in each interval."""
        if record.name != self._prefix and not record.name.startswith(self._prefix + "."):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this held back]"
        return True


class StartupCoordinatorFilter(logging.Filter):
    """For `grace_s` after start, aiokafka's GroupCoordinatorNotAvailable error is INFO.

    aiokafka logs "Group Coordinator Request failed: ... GroupCoordinatorNotAvailableError" at
    ERROR while the broker is still loading its group coordinator, which a fresh or restarted
    broker does on every start, and retries until it answers: an error line
    in every healthy start-up teaches operators to ignore error lines. After the grace period
    the same message is an error again, since the coordinator should be long up by then.
    """

    _MESSAGE = "Group Coordinator Request failed"

    def __init__(self, grace_s: float = 60.0, clock: Any = None) -> None:
        super().__init__()
        self._clock = clock or time.monotonic
        self._until = self._clock() + grace_s

    def filter(self, record: logging.LogRecord) -> bool:
        """Always True; lowers the level of the start-up coordinator message in the window."""
        if (
            record.levelno == logging.ERROR
            and record.name.startswith("aiokafka.")
            and str(record.msg).startswith(self._MESSAGE)
            and any(
                type(arg).__name__ == "GroupCoordinatorNotAvailableError"
                for arg in record.args or ()
            )
            and self._clock() < self._until
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg} (expected while the broker starts; retrying)"
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library (aiokafka, uvicorn) to one JSON stream."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    # A logger's own filters do not apply to its children's records: filter at the handler.
    handler.addFilter(RepeatLimiter("aiokafka"))
    handler.addFilter(StartupCoordinatorFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every rebalance step at INFO; keep its warnings only (and not a storm of
    # the same one while a broker is away: the handler's RepeatLimiter).
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request's URL at INFO: a lookup's URL holds the customer's identifier,
    # and capillary_request already says what each call did.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
