"""Settings into every component's configuration, in one place, checked before anything starts.

`configure(settings)` is the only code that reads `Settings` field by field: the Kafka edge, the
Capillary client, the flow core, the shell and the consumer loop each get a configuration value
of their own and never see the settings. A value that the settings model accepted but a
component refuses fails here, at start-up, as a `SettingsError` naming the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

import httpx
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import SecretStr, ValidationError

from promo_bridge.capillary import BasicAuth, ClientConfig, OAuthAuth
from promo_bridge.domain.flow import FlowConfig
from promo_bridge.kafka.consumer import ConsumerLoopConfig
from promo_bridge.kafka.producer import producer_options
from promo_bridge.pipeline import PipelineConfig
from promo_bridge.settings import (
    ENV_PREFIX,
    AuthMode,
    KafkaSecurityProtocol,
    Settings,
    SettingsError,
    describe_invalid,
)

_CLIENT_FIELD_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        # The Capillary client's configuration fields, and the variables they come from.
        "base_url": "CAPILLARY_BASE_URL",
        "batch_limits": "CAPILLARY_REVOKE_DIRECT_EARN_BATCH_SIZE",
        "calls_per_minute": "CAPILLARY_CALLS_PER_MINUTE",
        "lookup_calls_per_minute": "CAPILLARY_LOOKUP_CALLS_PER_MINUTE",
        "max_in_flight": "CAPILLARY_MAX_IN_FLIGHT",
        "connect_timeout_s": "CAPILLARY_CONNECT_TIMEOUT_S",
        "read_timeout_s": "CAPILLARY_READ_TIMEOUT_S",
        "max_attempts": "CAPILLARY_MAX_ATTEMPTS",
        "unenroll_path_prefix": "CAPILLARY_UNENROLL_PATH_PREFIX",
        "unenroll_not_enrolled_codes": "CAPILLARY_UNENROLL_NOT_ENROLLED_CODES",
        "till_code": "CAPILLARY_TILL_CODE",
        "password": "CAPILLARY_PASSWORD",
        "key": "CAPILLARY_OAUTH_KEY",
        "secret": "CAPILLARY_OAUTH_SECRET",
        "ca_file": "CAPILLARY_CA_FILE",
    }
)


METADATA_MAX_AGE_MS: Final = 5000
# Beyond the revocation's drain (PROMO_BRIDGE_DRAIN_TIMEOUT_S): its commit, and the read-back of
# newly assigned partitions, which also runs inside the rebalance (see rebalance_timeout_ms).
REBALANCE_MARGIN_S: Final = 40.0


@dataclass(frozen=True)
class ServiceConfig:
    """Every component's configuration (see the module docstring)."""

    # Shared by the consumer, the producer and the start-up probe.
    kafka: Mapping[str, Any]
    consumer: Mapping[str, Any]
    producer: Mapping[str, Any]
    outcomes_topic: str
    dlq_topic: str
    # None: the holdings ledger stays in memory (PROMO_BRIDGE_DURABLE_STATE=false).
    state_topic: str | None
    client: ClientConfig
    flow: FlowConfig
    pipeline: PipelineConfig
    loop: ConsumerLoopConfig
    ops_host: str
    ops_port: int
    # /readyz says not ready when work is pending and nothing completed for this long.
    stall_timeout_s: float
    # partitions: the client's budgets follow this replica's share of the input partitions.
    budget_split: Literal["partitions", "none"] = "partitions"


def configure(settings: Settings) -> ServiceConfig:
    """Turn settings into each component's configuration; SettingsError naming the variable."""
    client = _client_config(settings)
    return ServiceConfig(
        kafka=MappingProxyType(_kafka_options(settings)),
        consumer=MappingProxyType(
            {
                "group_id": settings.group_id,
                # Range keeps equal partition numbers of equally wide topics on one member, so
                # a customer's events of every topic meet its ledger there (co-partitioning).
                # Round robin stays listed so that a rolling upgrade from it can agree.
                "partition_assignment_strategy": (
                    RangePartitionAssignor,
                    RoundRobinPartitionAssignor,
                ),
                "enable_auto_commit": False,
                "auto_offset_reset": "earliest",
                "max_poll_records": settings.max_poll_records,
                "fetch_max_bytes": settings.kafka_fetch_max_bytes,
                "max_partition_fetch_bytes": settings.kafka_max_partition_fetch_bytes,
                "fetch_min_bytes": settings.kafka_fetch_min_bytes,
                "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
                # The group notices a subscribed topic created, or partitions added, only when
                # the consumer next refreshes its metadata: aiokafka's default of 5 minutes
                # left new partitions unread that long. One small metadata request every 5 s
                # is the price of picking them up within seconds.
                "metadata_max_age_ms": METADATA_MAX_AGE_MS,
                # How long the coordinator waits for a member to rejoin a rebalance. aiokafka's
                # default is the session timeout (10 s), but a member rejoins only after its
                # revocation drained (up to PROMO_BRIDGE_DRAIN_TIMEOUT_S, 20 s by default) and
                # committed: one that takes longer is dropped from the generation, rejoins,
                # and starts yet another rebalance. A member that dies is still noticed by
                # the session timeout.
                "rebalance_timeout_ms": int((settings.drain_timeout_s + REBALANCE_MARGIN_S) * 1000),
            }
        ),
        producer=MappingProxyType(
            {
                **producer_options(idempotence=settings.producer_idempotence),
                # An outcome goes to the outcomes partition numbered like its input partition;
                # one added while the service runs is refused ("Unrecognized partition") until
                # the producer's metadata is refreshed, so the same 5 s as the consumer.
                "metadata_max_age_ms": METADATA_MAX_AGE_MS,
            }
        ),
        outcomes_topic=settings.outcomes_topic,
        dlq_topic=settings.dlq_topic,
        state_topic=(settings.state_topic or f"{settings.group_id}.state")
        if settings.durable_state
        else None,
        client=client,
        # As many calls out as the client runs at once: the rest wait in the core, where the
        # oldest due batch (a lane's next command included) is the next to go.
        flow=dataclasses.replace(
            settings.flow_config(), max_calls_in_flight=settings.capillary_max_in_flight
        ),
        pipeline=PipelineConfig(
            durable_state=settings.durable_state,
            state_retention_ms=settings.state_retention_s * 1000,
        ),
        loop=ConsumerLoopConfig(
            topics=tuple(settings.input_topics),
            max_poll_records=settings.max_poll_records,
            commit_interval_s=settings.commit_interval_ms / 1000,
            drain_timeout_s=settings.drain_timeout_s,
        ),
        ops_host=settings.http_host,
        ops_port=settings.http_port,
        stall_timeout_s=settings.stall_timeout_s,
        budget_split=settings.capillary_budget_split,
    )


def _client_config(settings: Settings) -> ClientConfig:
    config = _client_config_fields(settings)
    try:
        config.tls_context()
    except (OSError, ssl.SSLError) as exc:
        # The file's name and OpenSSL's reason: a CA bundle holds no secret.
        raise SettingsError(
            f"invalid settings: {ENV_PREFIX}CAPILLARY_CA_FILE: cannot build the TLS context:"
            f" {exc.__class__.__name__}: {exc.strerror or exc}"
        ) from None
    return config


def _client_config_fields(settings: Settings) -> ClientConfig:
    auth: BasicAuth | OAuthAuth
    # The settings model checked that the credentials of the chosen mode are present.
    missing = SecretStr("")
    try:
        if settings.capillary_auth is AuthMode.BASIC:
            auth = BasicAuth(
                till_code=settings.capillary_till_code or "",
                password=settings.capillary_password or missing,
            )
        else:
            auth = OAuthAuth(
                key=settings.capillary_oauth_key or "",
                secret=settings.capillary_oauth_secret or missing,
            )
        return ClientConfig(
            base_url=settings.capillary_base_url,
            auth=auth,
            batch_limits=settings.batch_limits(),
            calls_per_minute=settings.capillary_calls_per_minute,
            lookup_calls_per_minute=settings.capillary_lookup_calls_per_minute,
            max_in_flight=settings.capillary_max_in_flight,
            connect_timeout_s=settings.capillary_connect_timeout_s,
            read_timeout_s=settings.capillary_read_timeout_s,
            max_attempts=settings.capillary_max_attempts,
            unenroll_path_prefix=settings.capillary_unenroll_path_prefix,
            unenroll_not_enrolled_codes=frozenset(settings.capillary_unenroll_not_enrolled_codes),
            ca_file=settings.capillary_ca_file,
        )
    except ValidationError as exc:
        raise SettingsError(describe_invalid(exc, _CLIENT_FIELD_VARIABLES)) from None


def _kafka_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol.value,
    }
    if settings.kafka_security_protocol in {
        KafkaSecurityProtocol.SSL,
        KafkaSecurityProtocol.SASL_SSL,
    }:
        options["ssl_context"] = _ssl_context(settings)
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    files = {
        "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    try:
        context: ssl.SSLContext = create_ssl_context(
            **{
                name.removeprefix("KAFKA_SSL_").lower(): str(path) if path else None
                for name, path in files.items()
            }
        )
    except (OSError, ssl.SSLError) as exc:
        # Which file is unreadable or not PEM is what the operator needs; the reason is
        # OpenSSL's or the OS's and carries no secret.
        named = ", ".join(f"{ENV_PREFIX}{name}" for name, path in files.items() if path)
        raise SettingsError(
            f"invalid settings: {named or ENV_PREFIX + 'KAFKA_SSL_*'}: cannot build the TLS "
            f"context: {exc.__class__.__name__}: {exc.strerror or exc}"
        ) from None
    return context


async def kafka_startup_problem(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """Talk to the first bootstrap broker once: None if it answers, else a line naming the setting.

    aiokafka reports every failed bootstrap as "Unable to bootstrap"; this tells a refused SASL
    password, an untrusted broker certificate and a missing client certificate apart, so the
    operator reads which variable to fix. The line never carries a secret or the broker list.
    """
    options = _kafka_options(settings)
    host, port, _ = collect_hosts(settings.kafka_bootstrap_servers, randomize=False)[0]
    conn = None
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host,
                port,
                client_id=settings.kafka_client_id,
                request_timeout_ms=int(timeout_s * 1000),
                ssl_context=options.get("ssl_context"),
                security_protocol=options["security_protocol"],
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            ),
            timeout_s,
        )
        # With TLS 1.3 a broker refuses a missing client certificate only after the handshake:
        # the refusal arrives with the first answer.
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
    except (OSError, TimeoutError, KafkaError) as exc:
        return "kafka start-up check: " + _kafka_problem(settings, exc)
    finally:
        if conn is not None:
            conn.close()
    return None


def _kafka_problem(settings: Settings, exc: BaseException) -> str:
    tls = settings.kafka_security_protocol in {
        KafkaSecurityProtocol.SSL,
        KafkaSecurityProtocol.SASL_SSL,
    }
    if isinstance(exc, ssl.SSLCertVerificationError):
        # OpenSSL's reason (issuer unknown, host name mismatch) names no secret.
        return (
            f"{ENV_PREFIX}KAFKA_SSL_CAFILE: the broker's certificate is not trusted"
            f" ({exc.verify_message})"
        )
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"{ENV_PREFIX}KAFKA_SASL_USERNAME/{ENV_PREFIX}KAFKA_SASL_PASSWORD: the broker refused"
            f" the credentials ({settings.kafka_sasl_mechanism})"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"{ENV_PREFIX}KAFKA_SASL_MECHANISM: the broker does not offer this mechanism"
    if tls and isinstance(exc, KafkaConnectionError | ssl.SSLError | ConnectionError):
        why = (
            "it may require a client certificate, and none is set"
            if settings.kafka_ssl_certfile is None
            else "it may not accept the client certificate"
        )
        return (
            f"{ENV_PREFIX}KAFKA_SSL_CERTFILE/{ENV_PREFIX}KAFKA_SSL_KEYFILE: the broker closed the"
            f" TLS connection; {why}"
        )
    if isinstance(exc, OSError | TimeoutError):
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        return f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS: the first broker is unreachable ({reason})"
    return (
        f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL: the first broker refused the connection"
        f" ({exc.__class__.__name__})"
    )


async def capillary_tls_problem(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """Open one TLS connection to the API as the client would: None, or a line naming the setting.

    The client reports a refused certificate as the API being unavailable; this says which
    variable to fix. Plain http:// (development only) has no TLS to check.
    """
    url = httpx.URL(settings.capillary_base_url)
    if url.scheme != "https":
        return None
    context = _client_config(settings).tls_context()
    port = url.port or 443
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, port, ssl=context), timeout_s
        )
    except ssl.SSLCertVerificationError as exc:
        hint = (
            f"{ENV_PREFIX}CAPILLARY_CA_FILE: the API's certificate is not trusted by it"
            if settings.capillary_ca_file is not None
            else f"{ENV_PREFIX}CAPILLARY_CA_FILE: the API's certificate is not trusted by the"
            " system's CAs; set this to the CA bundle that signed it"
        )
        return f"capillary start-up check: {hint} ({exc.verify_message})"
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        return (
            f"capillary start-up check: {ENV_PREFIX}CAPILLARY_BASE_URL: no TLS connection to the"
            f" API ({reason})"
        )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
