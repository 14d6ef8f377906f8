"""Integration tests run on uvloop: the event loop `promo-bridge run` serves on by default."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]]:
    """Each async test here gets a uvloop loop (TLS, SASL_SSL and signals included)."""
    del config, item
    return {"uvloop": uvloop.new_event_loop}
