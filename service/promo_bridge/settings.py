"""Settings from environment variables (prefix PROMO_BRIDGE_), checked once at start-up.

A bad value fails start-up with a message that names the variable, never its secret value.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from promo_bridge.domain.commands import DEFAULT_BATCH_LIMITS, Endpoint
from promo_bridge.domain.flow import FlowConfig

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


class EventLoop(StrEnum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# The checks below refuse at start-up what would otherwise fail only once the service connects.
# The URL and broker checks never repeat the value: either may carry a password.

_HOSTNAME: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
# Kafka's own rule for topic names (org.apache.kafka.common.internals.Topic).
_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MAX_PORT: Final = 65535
_KIB: Final = 1024
_MIB: Final = 1024 * _KIB
# Byte counts travel as int32 in Kafka's fetch request.
_INT32_MAX: Final = 2**31 - 1


def _printable_without_spaces(value: str) -> bool:
    return all(char.isprintable() and not char.isspace() for char in value)


def _check_base_url(value: str) -> str:
    """An absolute http(s) URL with a host, optionally a path prefix, and nothing else."""
    if not _printable_without_spaces(value):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("must be an absolute http or https URL with a valid port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            "must be an absolute http or https URL with a host, such as"
            " https://eu.api.capillarytech.com"
        )
    # Credentials in the URL would end up in logs and error messages.
    if "@" in parts.netloc:
        raise ValueError(
            "must not carry a user or password: the credentials are"
            f" {ENV_PREFIX}CAPILLARY_TILL_CODE/_PASSWORD or {ENV_PREFIX}CAPILLARY_OAUTH_KEY/_SECRET"
        )
    if port == 0:
        raise ValueError("must be an absolute http or https URL with a valid port")
    if "?" in value or "#" in value:
        raise ValueError("must not carry a query (?) or a fragment (#)")
    return value


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _valid_broker(entry: str) -> bool:
    """host[:port] or [ipv6][:port], as aiokafka reads them (port 9092 when left out)."""
    port: str | None
    if entry.startswith("["):
        address, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        host_ok, port = _is_ipv6(address), (rest[1:] if rest else None)
    elif entry.count(":") > 1:
        # A bare IPv6 address, which aiokafka takes without a port.
        return _is_ipv6(entry)
    else:
        host, colon, port_text = entry.partition(":")
        host_ok, port = bool(_HOSTNAME.fullmatch(host)), (port_text if colon else None)
    return host_ok and (port is None or (port.isdigit() and 0 < int(port) <= _MAX_PORT))


def _check_bootstrap_servers(value: str) -> str:
    entries = [entry.strip() for entry in value.split(",")]
    bad = [number for number, entry in enumerate(entries, 1) if not _valid_broker(entry)]
    if bad:
        which = ", ".join(map(str, bad))
        raise ValueError(
            f"must be host:port[,host:port...] without a scheme (broker {which} of {len(entries)})"
        )
    return value


def _check_topic(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in {".", ".."}:
        raise ValueError(
            f"a Kafka topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ - (got {value!r})"
        )
    return value


def _check_path_prefix(value: str) -> str:
    if value and not (
        value.startswith("/") and _printable_without_spaces(value) and not {"?", "#"} & set(value)
    ):
        raise ValueError("must be empty or a path such as /v3.1, without spaces, ? or #")
    return value


# Secrets that may come from a file instead, the way Kubernetes mounts a Secret: the variable
# PROMO_BRIDGE_<NAME>_FILE names the file, whose content is the value.
SECRET_FILE_FIELDS: Final = ("capillary_password", "capillary_oauth_secret", "kafka_sasl_password")
_FILE_SUFFIX: Final = "_FILE"


class _SecretFiles(PydanticBaseSettingsSource):
    """Values of SECRET_FILE_FIELDS read from the files their *_FILE variables name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every secret file at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field_name in SECRET_FILE_FIELDS:
            variable = f"{ENV_PREFIX}{field_name.upper()}"
            path = environ.get(variable + _FILE_SUFFIX)
            if not path:
                continue
            if variable in environ:
                # Which one would win is a guess the operator should not have to make.
                problems.append(f"{variable}{_FILE_SUFFIX}: set either it or {variable}, not both")
                continue
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                # The OS's reason only: the content is the secret.
                reason = getattr(exc, "strerror", None) or exc.__class__.__name__
                problems.append(f"{variable}{_FILE_SUFFIX}: cannot read {path} ({reason})")
                continue
            # `kubectl create secret --from-file` and editors keep the file's final newline.
            value = text.removesuffix("\n").removesuffix("\r")
            if not value:
                problems.append(f"{variable}{_FILE_SUFFIX}: the file {path} is empty")
                continue
            values[field_name] = value
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))
        return values


class FlowSettings(BaseSettings):
    """The knobs of the flow core: the service's, and what `replay --dry-run` runs with.

    Field `x_y` is read from `PROMO_BRIDGE_X_Y`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    # Batching and flow control
    batch_window_ms: int = Field(default=500, ge=0)
    capillary_revoke_direct_earn_batch_size: int = Field(default=10, ge=1, le=100)
    max_pending_commands: int = Field(default=10_000, ge=1)
    resume_pending_commands: int | None = Field(default=None, ge=0)
    unavailable_retry_s: float = Field(default=5.0, gt=0)
    # A command the API keeps failing (not merely down) fails `retry_exhausted` after this many
    # sends without its result, or this long after the first of them.
    retry_max_sends: int = Field(default=10, ge=1)
    retry_max_s: float = Field(default=900.0, gt=0)
    # Bytes of undecodable records held for the DLQ at which the partitions pause too.
    max_pending_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # Events of a type no rule reads go to the DLQ too (they are always counted).
    dead_letter_unread_events: bool = False
    # A return whose order the ledger does not know: skip its revoke_earn (outcome skipped,
    # order_unknown), or revoke_all (sent without earnIds: every earn of the promotion goes).
    unknown_order_return: Literal["skip", "revoke_all"] = "skip"

    @model_validator(mode="after")
    def _low_water_below_bound(self) -> Self:
        if self.resume_pending_commands is not None and (
            self.resume_pending_commands >= self.max_pending_commands
        ):
            raise ValueError(
                f"{ENV_PREFIX}RESUME_PENDING_COMMANDS: must be below MAX_PENDING_COMMANDS"
            )
        return self

    @property
    def resume_below(self) -> int:
        """Low-water mark: partitions resume once pending commands fall below it."""
        if self.resume_pending_commands is not None:
            return self.resume_pending_commands
        return self.max_pending_commands // 2

    def batch_limits(self) -> dict[Endpoint, int]:
        """Commands per call for each endpoint: the documented limits, one of them a setting."""
        limits = dict(DEFAULT_BATCH_LIMITS)
        limits[Endpoint.REVOKE_DIRECT_EARN] = self.capillary_revoke_direct_earn_batch_size
        return limits

    def flow_config(self) -> FlowConfig:
        """The flow core's configuration."""
        return FlowConfig(
            window_ms=self.batch_window_ms,
            batch_limits=MappingProxyType(self.batch_limits()),
            max_pending=self.max_pending_commands,
            resume_below=self.resume_below,
            unavailable_retry_s=self.unavailable_retry_s,
            retry_max_sends=self.retry_max_sends,
            retry_max_s=self.retry_max_s,
            max_pending_bytes=self.max_pending_bytes,
            dead_letter_unread=self.dead_letter_unread_events,
            unknown_order_revokes_all=self.unknown_order_return == "revoke_all",
        )


class Settings(FlowSettings):
    """Every knob of the service. Field `x_y` is read from `PROMO_BRIDGE_X_Y`.

    The fields in SECRET_FILE_FIELDS can also be read from the file `PROMO_BRIDGE_X_Y_FILE` names.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _SecretFiles(settings_cls),
            dotenv_settings,
            file_secret_settings,
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
    group_id: str = Field(default="promo-bridge", min_length=1)
    input_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["orders", "returns", "reviews"]
    )
    outcomes_topic: str = "promo-bridge.outcomes"
    dlq_topic: str = "promo-bridge.dlq"
    # The holdings ledger (intents, issualIds, earnedIds): compacted, co-partitioned with the
    # input, created at start-up when missing. Empty: "<group id>.state" (it is the group's).
    state_topic: str = ""
    durable_state: bool = True
    state_retention_s: int = Field(default=30 * 24 * 3600, ge=60)
    max_poll_records: int = Field(default=500, ge=1)
    # What one fetch may bring, so that memory is bounded by these settings rather than by what
    # producers send. A record batch larger than either limit still comes, alone (KIP-74).
    kafka_fetch_max_bytes: int = Field(default=16 * _MIB, ge=_KIB, le=_INT32_MAX)
    kafka_max_partition_fetch_bytes: int = Field(default=_MIB, ge=_KIB, le=_INT32_MAX)
    # The broker answers a fetch once this much is there, or after the wait. A fetch of a few
    # records costs about what a full one does: at a steady 1,000 events/s, waiting for 256 KiB
    # or 50 ms cut the service's CPU from 36 to 14 % of a core (p99 latency 138 -> 200 ms); at
    # 8,261 events/s from 80 to 64 %, and the p99 from over 1 s to 280 ms (bench-e2e).
    kafka_fetch_min_bytes: int = Field(default=256 * _KIB, ge=1, le=_INT32_MAX)
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=0, le=10_000)
    commit_interval_ms: int = Field(default=1000, ge=10)
    # aiokafka's idempotent producer (InitProducerId v0) is accepted by Kafka 4.1: broker-side
    # retries of an outcome batch then write it once. Turn off for brokers that refuse it.
    producer_idempotence: bool = True

    # Rules
    rules_file: Path = Path("examples/rules.yaml")

    # Capillary
    capillary_base_url: str = "http://127.0.0.1:8090"
    # Credentials travel with every call: an http:// base URL is refused unless this is set,
    # which only a local simulator should need (the default URL is the simulator's).
    capillary_allow_http: bool = False
    # PEM CA bundle to verify the API's certificate with instead of the system's; verification
    # itself cannot be turned off.
    capillary_ca_file: Path | None = None
    capillary_auth: AuthMode = AuthMode.BASIC
    capillary_till_code: str | None = None
    capillary_password: SecretStr | None = None
    capillary_oauth_key: str | None = None
    capillary_oauth_secret: SecretStr | None = None
    # The org's budgets per endpoint: every replica of the consumer group together.
    capillary_calls_per_minute: int = Field(default=100, ge=1)
    # Customer lookups (verifying calls whose answer was lost) have a budget of their own.
    capillary_lookup_calls_per_minute: int = Field(default=100, ge=1)
    # partitions: a replica takes the budgets times its share of the input partitions, so any
    # number of replicas together use them whole; none: this replica alone uses them whole.
    capillary_budget_split: Literal["partitions", "none"] = "partitions"
    capillary_max_in_flight: int = Field(default=8, ge=1)
    capillary_connect_timeout_s: float = Field(default=5.0, gt=0)
    capillary_read_timeout_s: float = Field(default=30.0, gt=0)
    capillary_max_attempts: int = Field(default=5, ge=1)
    capillary_unenroll_path_prefix: str = "/v3.1"
    # Capillary documents no "not enrolled" answer to unEnroll; list the codes your org uses
    # (the bundled simulator answers 310120) so a repeated un-enrol counts as already applied.
    capillary_unenroll_not_enrolled_codes: Annotated[list[int], NoDecode] = Field(
        default_factory=list
    )

    # Shutdown and rebalance
    drain_timeout_s: float = Field(default=20.0, gt=0)
    # Health: pending work and nothing completed for this long is a stuck pipeline.
    stall_timeout_s: float = Field(default=120.0, gt=0)

    # Operations
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON
    # uvloop: the same service on libuv's loop costs less CPU per command (make bench-e2e);
    # asyncio: the standard library's loop, should a platform or a debugger need it.
    event_loop: EventLoop = EventLoop.UVLOOP

    @field_validator("input_topics", "capillary_unenroll_not_enrolled_codes", mode="before")
    @classmethod
    def _topics_from_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("input_topics")
    @classmethod
    def _topics_valid(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one input topic is required")
        for topic in value:
            _check_topic(topic)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator(
        "rules_file",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "capillary_ca_file",
    )
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("capillary_base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        return _check_base_url(value)

    @field_validator("capillary_unenroll_path_prefix")
    @classmethod
    def _path_prefix(cls, value: str) -> str:
        return _check_path_prefix(value)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        return _check_bootstrap_servers(value)

    @field_validator("outcomes_topic", "dlq_topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        return _check_topic(value)

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> Self:
        # The URL itself is not repeated (see _check_base_url): only its scheme matters here.
        if urlsplit(self.capillary_base_url).scheme == "http" and not self.capillary_allow_http:
            raise ValueError(
                f"{ENV_PREFIX}CAPILLARY_BASE_URL: must be https:// (credentials go with every"
                f" call); {ENV_PREFIX}CAPILLARY_ALLOW_HTTP=true allows http:// for a local"
                " simulator only"
            )
        return self

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
        # aiokafka ignores a key without a certificate: TLS would then fail at the broker.
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            problems.append(f"{ENV_PREFIX}KAFKA_SSL_KEYFILE: needs {ENV_PREFIX}KAFKA_SSL_CERTFILE")
        problems.extend(self._fetch_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _fetch_problems(self) -> list[str]:
        problems = []
        # A partition's share larger than the whole fetch would be capped by it anyway: the
        # operator meant something else, and the memory bound would not read as set.
        if self.kafka_max_partition_fetch_bytes > self.kafka_fetch_max_bytes:
            problems.append(
                f"{ENV_PREFIX}KAFKA_MAX_PARTITION_FETCH_BYTES: must not exceed"
                f" {ENV_PREFIX}KAFKA_FETCH_MAX_BYTES"
            )
        # The broker would then wait out every fetch for more than one fetch may bring.
        if self.kafka_fetch_min_bytes > self.kafka_fetch_max_bytes:
            problems.append(
                f"{ENV_PREFIX}KAFKA_FETCH_MIN_BYTES: must not exceed"
                f" {ENV_PREFIX}KAFKA_FETCH_MAX_BYTES"
            )
        return problems


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; on any problem raise SettingsError naming each variable."""
    return _load(Settings, overrides)


def load_flow_settings(**overrides: Any) -> FlowSettings:
    """Only the flow core's settings (for `replay --dry-run`), checked the same way."""
    return _load(FlowSettings, overrides)


_S = TypeVar("_S", bound=BaseSettings)


def _load(model: type[_S], overrides: dict[str, Any]) -> _S:
    try:
        return model(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_invalid(exc)) from None


def describe_invalid(exc: ValidationError, field_variables: Mapping[str, str] | None = None) -> str:
    """One line naming each offending variable, without the values it was given."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            name = str(error["loc"][0])
            variable = (field_variables or {}).get(name, name.upper())
            problems.append(f"{ENV_PREFIX}{variable}: {message}")
        else:
            # A model-level check already names its variables.
            problems.append(message)
    return "invalid settings: " + "; ".join(problems)


# The test suite's own variables (tests/conftest.py, tests/runtime_support.py) share the prefix
# and reach services that tests start; they configure the tests, not the service.
_NOT_SETTINGS_PREFIX: Final = ENV_PREFIX + "TEST_"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One problem per PROMO_BRIDGE_* variable that names no setting, with a did-you-mean.

    pydantic-settings ignores such a variable, so a typo would silently leave the default.
    """
    known = sorted(
        [name.upper() for name in Settings.model_fields]
        + [name.upper() + _FILE_SUFFIX for name in SECRET_FILE_FIELDS]
    )
    problems = []
    for name in sorted(environ):
        # Names are matched without regard to case, as the settings read them.
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_NOT_SETTINGS_PREFIX):
            continue
        suffix = upper.removeprefix(ENV_PREFIX)
        if suffix in known:
            continue
        # Compared without the shared prefix, which would make every name look alike.
        close = difflib.get_close_matches(suffix, known, n=1, cutoff=0.6)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        problems.append(f"{name}: unknown setting{hint}")
    return problems


def check_known_variables(environ: Mapping[str, str]) -> None:
    """SettingsError naming every unknown PROMO_BRIDGE_* variable (see `unknown_variables`)."""
    problems = unknown_variables(environ)
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
