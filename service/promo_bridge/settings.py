"""Settings from environment variables (prefix PROMO_BRIDGE_), checked once at start-up.

A bad value fails start-up with a message that names the variable, never its secret value.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "PROMO_BRIDGE_"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names every offending variable."""


class AuthMode(StrEnum):
    BASIC = "basic"
    OAUTH = "oauth"


class KafkaSecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service. Field `x_y` is read from `PROMO_BRIDGE_X_Y`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str = "promo-bridge"
    kafka_security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    group_id: str = "promo-bridge"
    input_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["orders", "returns", "reviews"]
    )
    outcomes_topic: str = "promo-bridge.outcomes"
    dlq_topic: str = "promo-bridge.dlq"
    max_poll_records: int = Field(default=500, ge=1)
    commit_interval_ms: int = Field(default=1000, ge=10)
    # aiokafka's idempotent producer (InitProducerId v0) is accepted by Kafka 4.1: broker-side
    # retries of an outcome batch then write it once. Turn off for brokers that refuse it.
    producer_idempotence: bool = True

    # Rules
    rules_file: Path = Path("examples/rules.yaml")

    # Capillary
    capillary_base_url: str = "http://127.0.0.1:8090"
    capillary_auth: AuthMode = AuthMode.BASIC
    capillary_till_code: str | None = None
    capillary_password: SecretStr | None = None
    capillary_oauth_key: str | None = None
    capillary_oauth_secret: SecretStr | None = None
    capillary_calls_per_minute: int = Field(default=100, ge=1)
    capillary_max_in_flight: int = Field(default=8, ge=1)
    capillary_connect_timeout_s: float = Field(default=5.0, gt=0)
    capillary_read_timeout_s: float = Field(default=30.0, gt=0)
    capillary_max_attempts: int = Field(default=5, ge=1)
    capillary_revoke_direct_earn_batch_size: int = Field(default=10, ge=1, le=100)
    capillary_unenroll_path_prefix: str = "/v3.1"
    # Capillary documents no "not enrolled" answer to unEnroll; list the codes your org uses
    # (the bundled simulator answers 310120) so a repeated un-enrol counts as already applied.
    capillary_unenroll_not_enrolled_codes: Annotated[list[int], NoDecode] = Field(
        default_factory=list
    )

    # Batching and flow control
    batch_window_ms: int = Field(default=500, ge=0)
    max_pending_commands: int = Field(default=10_000, ge=1)
    resume_pending_commands: int | None = Field(default=None, ge=0)
    drain_timeout_s: float = Field(default=20.0, gt=0)
    unavailable_retry_s: float = Field(default=5.0, gt=0)

    # Operations
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON

    @field_validator("input_topics", "capillary_unenroll_not_enrolled_codes", mode="before")
    @classmethod
    def _topics_from_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("input_topics")
    @classmethod
    def _topics_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one input topic is required")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("rules_file")
    @classmethod
    def _rules_exist(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        if self.capillary_auth is AuthMode.BASIC:
            if not self.capillary_till_code:
                problems.append(f"{ENV_PREFIX}CAPILLARY_TILL_CODE: required when auth is basic")
            if self.capillary_password is None:
                problems.append(f"{ENV_PREFIX}CAPILLARY_PASSWORD: required when auth is basic")
        else:
            if not self.capillary_oauth_key:
                problems.append(f"{ENV_PREFIX}CAPILLARY_OAUTH_KEY: required when auth is oauth")
            if self.capillary_oauth_secret is None:
                problems.append(f"{ENV_PREFIX}CAPILLARY_OAUTH_SECRET: required when auth is oauth")
        if self.kafka_security_protocol in {
            KafkaSecurityProtocol.SASL_PLAINTEXT,
            KafkaSecurityProtocol.SASL_SSL,
        }:
            if self.kafka_sasl_mechanism is None:
                problems.append(f"{ENV_PREFIX}KAFKA_SASL_MECHANISM: required with SASL")
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                problems.append(f"{ENV_PREFIX}KAFKA_SASL_USERNAME/PASSWORD: required with SASL")
        if self.resume_pending_commands is not None and (
            self.resume_pending_commands >= self.max_pending_commands
        ):
            problems.append(
                f"{ENV_PREFIX}RESUME_PENDING_COMMANDS: must be below MAX_PENDING_COMMANDS"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def resume_below(self) -> int:
        """Low-water mark: partitions resume once pending commands fall below it."""
        if self.resume_pending_commands is not None:
            return self.resume_pending_commands
        return self.max_pending_commands // 2


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; on any problem raise SettingsError naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        location = [str(part) for part in error["loc"]]
        if location:
            name = f"{ENV_PREFIX}{location[0].upper()}"
            lines.append(f"{name}: {error['msg']}")
        else:
            # A model-level check already names its variables.
            lines.append(str(error["msg"]).removeprefix("Value error, "))
    return "invalid settings:\n  " + "\n  ".join(lines)
