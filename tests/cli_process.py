"""Running `promo-bridge` in a child process with a test's settings as its environment."""

from __future__ import annotations

import asyncio
import os
import sys
from enum import Enum
from typing import Any

import pytest
from pydantic import SecretStr

from promo_bridge.settings import ENV_PREFIX, Settings


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def use_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings, **extra: str) -> None:
    """Make `settings` (and `extra` variables) the process's only PROMO_BRIDGE_* settings."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) and not name.startswith(ENV_PREFIX + "TEST_"):
            monkeypatch.delenv(name)
    for name, value in settings.model_dump(exclude_defaults=True).items():
        if value is not None:
            monkeypatch.setenv(f"{ENV_PREFIX}{name.upper()}", _text(value))
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


async def run_cli(*argv: str, timeout_s: float = 60) -> tuple[int, str]:
    """`promo-bridge` in a child process (the simulator keeps serving in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "promo_bridge.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    return await proc.wait(), out.decode()
