"""Shared fixtures: one real Kafka broker per test session, unique topics per test, the rig."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import kafka_broker
from harness import Rig

# Point at a running broker to skip starting one (e.g. while iterating by hand).
BOOTSTRAP_ENV = "PROMO_BRIDGE_TEST_KAFKA_BOOTSTRAP"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node Kafka 4.1 broker on 127.0.0.1, started once per session."""
    existing = os.environ.get(BOOTSTRAP_ENV)
    if existing:
        yield existing
        return
    broker = kafka_broker.start_broker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        kafka_broker.stop_broker(broker)


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps topics and groups of one test apart from all others."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def rig(kafka_bootstrap: str, unique: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """A runtime test's rules, topics and simulator over HTTP: `await rig.prepare(sim, ...)`."""
    async with contextlib.AsyncExitStack() as exits:
        yield Rig(kafka_bootstrap, unique, tmp_path, exits)
