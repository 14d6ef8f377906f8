"""Shared fixtures: one real Kafka broker per test session, unique topics per test."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_broker  # noqa: E402

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
