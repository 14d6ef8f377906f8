"""The service against a broker that requires SASL_SSL (SCRAM-SHA-512) or mutual TLS (issue 15)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import kafka_broker
from harness import Rig, order_placed, running_service, service_settings, write_rules
from kafka_tools import committed_offsets, produce, produce_events, read_topic, wait_caught_up
from promo_bridge.bootstrap import kafka_startup_problem
from promo_bridge.runtime import build_service, run_service
from promo_bridge.settings import Settings
from promo_bridge.simulator import Credentials, Simulator, serve
from promo_bridge.simulator._server import ServerTls
from runtime_support import wait_until

pytestmark = pytest.mark.integration

SASL_USER = "promo-bridge"
SASL_PASSWORD = "scram-s3cret-never-logged"


@pytest.fixture(scope="module")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[kafka_broker.Broker, kafka_broker.TestPki]]:
    """One broker for this module with PLAINTEXT, SASL_SSL and mutual-TLS listeners."""
    directory = tmp_path_factory.mktemp("secure-kafka")
    pki = kafka_broker.make_test_pki(directory / "tls")
    broker = kafka_broker.start_broker(
        directory / "data",
        security=kafka_broker.Security(
            keystore_pem=pki.broker_keystore,
            truststore_pem=pki.ca_cert,
            scram_users=((SASL_USER, SASL_PASSWORD),),
        ),
    )
    try:
        yield broker, pki
    finally:
        kafka_broker.stop_broker(broker)


def _sasl(broker: kafka_broker.Broker, pki: kafka_broker.TestPki, **extra: Any) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": broker.sasl_ssl_bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": SASL_USER,
        "kafka_sasl_password": SASL_PASSWORD,
        "kafka_ssl_cafile": pki.ca_cert,
        **extra,
    }


def _mtls(broker: kafka_broker.Broker, pki: kafka_broker.TestPki, **extra: Any) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": broker.ssl_bootstrap,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca_cert,
        "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key,
        **extra,
    }


async def _round_trip(
    broker: kafka_broker.Broker, unique: str, tmp_path: Path, security: dict[str, Any]
) -> None:
    """Events in over the secured listener: calls made, outcomes and a DLQ record out, committed."""
    customers = [str(810_000 + i) for i in range(6)]
    sim = Simulator()
    async with contextlib.AsyncExitStack() as exits:
        # Topics and the checks below use the same broker's PLAINTEXT listener; the service
        # itself is given only the secured one.
        rig = Rig(broker.bootstrap, unique, tmp_path, exits)
        settings = await rig.prepare(sim, partitions=2, **security)
        async with running_service(settings):
            await produce_events(
                broker.bootstrap,
                [order_placed(c, 6000.0) for c in customers],
                topic_of_type={},
                default_topic=rig.topic,
            )
            await produce(broker.bootstrap, [(rig.topic, b"k", b"not a cloudevent")])
            outcomes = await read_topic(
                broker.bootstrap,
                settings.outcomes_topic,
                until=lambda got: len(got) >= len(customers),
            )
            dead = await read_topic(broker.bootstrap, settings.dlq_topic, until=bool)
            await wait_caught_up(broker.bootstrap, settings.group_id, [rig.topic])
        # Stopped the way SIGTERM stops it: drained, committed, group left; nothing re-read.
        committed = await committed_offsets(broker.bootstrap, settings.group_id)
    assert sum(committed.values()) == len(customers) + 1
    assert len(outcomes) == len(customers)
    assert [json.loads(record.value or b"")["value_text"] for record in dead] == [
        "not a cloudevent"
    ]
    enrolments = [c for c in sim.calls if c.status == 200 and c.endpoint == "enrolAndEarn"]
    assert sum(call.customers for call in enrolments) == len(customers)


async def test_service_round_trip_over_sasl_ssl_scram_sha_512(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki], unique: str, tmp_path: Path
) -> None:
    """Over SASL_SSL with SCRAM-SHA-512 the service consumes, calls, publishes and commits."""
    broker, pki = secure_broker
    await _round_trip(broker, unique, tmp_path, _sasl(broker, pki))


async def test_service_round_trip_over_mutual_tls(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki], unique: str, tmp_path: Path
) -> None:
    """Over TLS with a client certificate the service consumes, calls, publishes and commits."""
    broker, pki = secure_broker
    await _round_trip(broker, unique, tmp_path, _mtls(broker, pki))


def _settings(tmp_path: Path, kafka: dict[str, Any]) -> Settings:
    return service_settings(
        api_url="http://127.0.0.1:9",
        rules_file=write_rules(tmp_path),
        unique="startup-check",
        topics=["events-startup-check"],
        **{"bootstrap": kafka.pop("kafka_bootstrap_servers"), **kafka},
    )


async def test_wrong_sasl_password_names_the_sasl_settings_without_the_secret(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki], tmp_path: Path
) -> None:
    """A refused SCRAM password gives one line naming KAFKA_SASL_PASSWORD, and no password."""
    broker, pki = secure_broker
    wrong = "wrong-scram-s3cret"
    line = await kafka_startup_problem(
        _settings(tmp_path, _sasl(broker, pki, kafka_sasl_password=wrong))
    )
    assert line is not None
    assert "PROMO_BRIDGE_KAFKA_SASL_PASSWORD" in line
    assert "\n" not in line
    assert wrong not in line
    assert SASL_PASSWORD not in line


async def test_untrusted_broker_certificate_names_the_ca_setting(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki], tmp_path: Path
) -> None:
    """A broker certificate from another CA gives one line naming KAFKA_SSL_CAFILE."""
    broker, pki = secure_broker
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    line = await kafka_startup_problem(
        _settings(tmp_path, _sasl(broker, pki, kafka_ssl_cafile=other_ca))
    )
    assert line is not None
    assert "PROMO_BRIDGE_KAFKA_SSL_CAFILE" in line
    assert "not trusted" in line
    assert SASL_PASSWORD not in line


async def test_missing_client_certificate_names_the_certificate_settings(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki], tmp_path: Path
) -> None:
    """Mutual TLS without a client certificate gives one line naming KAFKA_SSL_CERTFILE."""
    broker, pki = secure_broker
    kafka = _mtls(broker, pki)
    del kafka["kafka_ssl_certfile"], kafka["kafka_ssl_keyfile"]
    line = await kafka_startup_problem(_settings(tmp_path, kafka))
    assert line is not None
    assert "PROMO_BRIDGE_KAFKA_SSL_CERTFILE" in line
    assert "client certificate" in line


async def test_startup_check_passes_on_correct_security_settings(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki], tmp_path: Path
) -> None:
    """With the right password and certificates the start-up check finds no problem."""
    broker, pki = secure_broker
    assert await kafka_startup_problem(_settings(tmp_path, _sasl(broker, pki))) is None
    assert await kafka_startup_problem(_settings(tmp_path, _mtls(broker, pki))) is None


async def test_secrets_from_files_reach_broker_and_api_and_no_log_line(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki],
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SASL and Capillary passwords from *_FILE files authenticate end to end, never logged."""
    broker, pki = secure_broker
    api_secret = "capillary-file-s3cret"
    (tmp_path / "sasl").write_text(SASL_PASSWORD + "\n")
    (tmp_path / "capillary").write_text(api_secret + "\n")
    monkeypatch.setenv("PROMO_BRIDGE_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "sasl"))
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD_FILE", str(tmp_path / "capillary"))
    # The API over TLS too, with a CA of its own.
    server_cert = kafka_broker.make_test_pki(tmp_path / "api-tls")
    # broker.pem is the key and chain of a certificate for 127.0.0.1, in one file.
    tls = ServerTls(server_cert.broker_keystore, server_cert.broker_keystore)
    sim = Simulator(credentials=Credentials(password=api_secret))
    customers = [str(820_000 + i) for i in range(4)]
    caplog.set_level(logging.DEBUG)
    async with contextlib.AsyncExitStack() as exits:
        rig = Rig(broker.bootstrap, unique, tmp_path, exits)
        await rig.prepare(sim, partitions=1)
        api = await exits.enter_async_context(serve(sim, tls=tls))
        values = service_settings(
            bootstrap=broker.sasl_ssl_bootstrap or "",
            api_url=api.base_url,
            rules_file=write_rules(tmp_path),
            unique=unique,
            topics=[rig.topic],
            capillary_ca_file=server_cert.ca_cert,
            **{k: v for k, v in _sasl(broker, pki).items() if k != "kafka_bootstrap_servers"},
        ).model_dump(exclude={"capillary_password", "kafka_sasl_password"})
        settings = Settings(**values)
        assert settings.capillary_password is not None
        assert settings.capillary_password.get_secret_value() == api_secret
        async with running_service(settings):
            await produce_events(
                broker.bootstrap,
                [order_placed(c, 6000.0) for c in customers],
                topic_of_type={},
                default_topic=rig.topic,
            )
            await read_topic(
                broker.bootstrap,
                settings.outcomes_topic,
                until=lambda got: len(got) >= len(customers),
            )
    enrolments = [c for c in sim.calls if c.status == 200 and c.endpoint == "enrolAndEarn"]
    assert sum(call.customers for call in enrolments) == len(customers)
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "service_started" in logged
    for secret in (api_secret, SASL_PASSWORD):
        assert secret not in logged


async def test_service_with_wrong_sasl_password_stays_alive_not_ready_and_logs_no_secret(
    secure_broker: tuple[kafka_broker.Broker, kafka_broker.TestPki],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused password keeps the service up but not ready (no crash loop), secret unlogged."""
    broker, pki = secure_broker
    wrong = "wrong-scram-s3cret"
    settings = _settings(tmp_path, _sasl(broker, pki, kafka_sasl_password=wrong))
    service = build_service(settings)
    task = asyncio.create_task(run_service(service, install_signals=False))
    try:
        # aiokafka's own line on the refusal: the service has tried and is waiting to retry.
        await wait_until(
            lambda: "SaslAuthenticationFailed" in caplog.text,
            timeout_s=30,
            what="the broker's refusal",
        )
        assert not task.done()
        readiness = service.readiness()
        assert not readiness.ready
        assert readiness.reasons["broker_reachable"] is False
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "kafka_unreachable_at_startup" in logged
    assert "PROMO_BRIDGE_KAFKA_SASL_PASSWORD: the broker refused" in logged
    assert wrong not in logged


def test_cli_start_secure_prints_listeners_serving_the_test_ca(tmp_path: Path) -> None:
    """CLI `start --secure` prints both secured listeners; each completes TLS with its CA."""
    script = str(Path(kafka_broker.__file__))
    started = subprocess.run(
        [sys.executable, script, "start", "--data-dir", str(tmp_path), "--secure"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    try:
        printed = dict(field.split("=", 1) for field in started.stdout.split() if "=" in field)
        context = ssl.create_default_context(cafile=Path(printed["tls_dir"]) / "ca.pem")
        for listener in (printed["sasl_ssl_bootstrap"], printed["ssl_bootstrap"]):
            host, port = listener.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.version() is not None
    finally:
        subprocess.run(
            [sys.executable, script, "stop", "--data-dir", str(tmp_path)], check=True, timeout=60
        )
