"""One bootstrap: settings become every component's configuration, checked before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import service_settings, write_rules
from promo_bridge.bootstrap import configure
from promo_bridge.domain.commands import Endpoint
from promo_bridge.runtime import build_service
from promo_bridge.settings import Settings, SettingsError


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return service_settings(
        bootstrap="127.0.0.1:9092",
        api_url="http://127.0.0.1:8090",
        rules_file=write_rules(tmp_path),
        unique="boot",
        topics=["orders"],
        **overrides,
    )


def test_each_component_gets_its_part_of_the_settings(tmp_path: Path) -> None:
    """Window, limits, pause marks, topics and timeouts land in the component that uses them."""
    settings = settings_for(
        tmp_path,
        batch_window_ms=250,
        capillary_revoke_direct_earn_batch_size=7,
        max_pending_commands=40,
        drain_timeout_s=3.0,
    )
    config = configure(settings)
    assert config.flow.window_ms == 250
    assert config.flow.batch_limits[Endpoint.REVOKE_DIRECT_EARN] == 7
    assert config.client.batch_limits[Endpoint.REVOKE_DIRECT_EARN] == 7
    assert (config.flow.max_pending, config.flow.resume_below) == (40, 20)
    assert config.flow.max_calls_in_flight == config.client.max_in_flight == 8
    assert config.loop.topics == ("orders",)
    assert config.loop.drain_timeout_s == 3.0
    assert config.consumer["group_id"] == "pb-boot"
    assert config.consumer["enable_auto_commit"] is False
    assert config.kafka["bootstrap_servers"] == "127.0.0.1:9092"
    assert config.client.base_url == "http://127.0.0.1:8090"


def test_an_unreadable_tls_file_fails_start_up_naming_the_variables(tmp_path: Path) -> None:
    """A CA file that is not PEM fails in build_service naming the TLS variables, not later."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    settings = settings_for(tmp_path, kafka_security_protocol="SSL", kafka_ssl_cafile=ca)
    with pytest.raises(SettingsError) as caught:
        build_service(settings)
    message = str(caught.value)
    assert message.startswith("invalid settings: PROMO_BRIDGE_KAFKA_SSL_CAFILE:")
    assert "\n" not in message


def test_fetch_limits_reach_the_consumer(tmp_path: Path) -> None:
    """The fetch limits are the consumer's fetch_max_bytes and max_partition_fetch_bytes."""
    settings = settings_for(
        tmp_path, kafka_fetch_max_bytes=4_194_304, kafka_max_partition_fetch_bytes=524_288
    )
    consumer = configure(settings).consumer
    assert consumer["fetch_max_bytes"] == 4_194_304
    assert consumer["max_partition_fetch_bytes"] == 524_288


def test_fetch_wait_reaches_the_consumer(tmp_path: Path) -> None:
    """The consumer's fetch_min_bytes and fetch_max_wait_ms are the two settings."""
    settings = settings_for(tmp_path, kafka_fetch_min_bytes=1, kafka_fetch_max_wait_ms=0)
    consumer = configure(settings).consumer
    assert (consumer["fetch_min_bytes"], consumer["fetch_max_wait_ms"]) == (1, 0)


def test_consumer_and_producer_refresh_metadata_within_seconds(tmp_path: Path) -> None:
    """Consumer and producer re-read metadata every 5 s: added partitions work within seconds."""
    config = configure(settings_for(tmp_path))
    assert config.consumer["metadata_max_age_ms"] == 5000
    assert config.producer["metadata_max_age_ms"] == 5000
