"""The Kafka jar cache follows XDG_CACHE_HOME, as the deploy-check tool cache does."""

from __future__ import annotations

from pathlib import Path

import pytest

import kafka_broker


@pytest.fixture(autouse=True)
def _no_pinned_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_HOME_CACHE", raising=False)


def test_cache_under_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An absolute XDG_CACHE_HOME holds the jars under promo-bridge/kafka-<version>."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = tmp_path / "promo-bridge" / f"kafka-{kafka_broker.kafka_version()}"
    assert kafka_broker.cache_dir() == expected


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_unset_or_relative_xdg_falls_back_to_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """Empty or relative XDG_CACHE_HOME is ignored (the XDG rule): ~/.cache is used."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert kafka_broker.cache_dir().parent == tmp_path / ".cache" / "promo-bridge"


def test_kafka_home_cache_still_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """KAFKA_HOME_CACHE pins the directory whatever XDG_CACHE_HOME says."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KAFKA_HOME_CACHE", str(tmp_path / "pinned"))
    assert kafka_broker.cache_dir() == tmp_path / "pinned"
