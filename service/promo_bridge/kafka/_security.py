"""aiokafka connection options (TLS, SASL PLAIN/SCRAM) from settings."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from promo_bridge.settings import KafkaSecurityProtocol, Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by the consumer, the producer and the admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol.value,
    }
    if settings.kafka_security_protocol in {
        KafkaSecurityProtocol.SSL,
        KafkaSecurityProtocol.SASL_SSL,
    }:
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options
