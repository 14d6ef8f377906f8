"""The findings of `promo-bridge check` (_cli_check.py): settings, rules, broker, topics, API.

The probes create nothing (no topic, no consumer group) and send no command: the one call to
Capillary is a read-only lookup of a customer that does not exist, or a token request.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from promo_bridge.bootstrap import ServiceConfig, configure
from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    CapillaryClient,
    LookupFailedError,
)
from promo_bridge.domain.rules import RulesError, RuleSet, load_rules
from promo_bridge.kafka.restore import OutcomeRestorer, TopologyError
from promo_bridge.runtime_banner import safe_url
from promo_bridge.runtime_client import probe_promotion, prove_credentials
from promo_bridge.settings import (
    ENV_PREFIX,
    AuthMode,
    Settings,
    SettingsError,
    load_settings,
    unknown_variables,
)

Level = Literal["ok", "warning", "error"]

# A customer no org holds: Capillary answers "unknown customer" (code 8015) to an
# authenticated lookup of it, and 401 when the credentials are wrong.
# Enough to tell a refusal from an outage without the service's long backoff.
_PROBE_ATTEMPTS: Final = 2


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report."""

    level: Level
    text: str

    def render(self) -> str:
        """`ok: ...`, `warning: ...` or `error: ...`."""
        return f"{self.level}: {self.text}"


@dataclass
class Findings:
    """What the probes found, in order."""

    items: list[Finding] = field(default_factory=list)

    def add(self, level: Level, text: str) -> None:
        """Record one finding."""
        self.items.append(Finding(level, text))

    @property
    def failed(self) -> bool:
        """Whether any finding is an error."""
        return any(item.level == "error" for item in self.items)


async def check(environ: Mapping[str, str] | None = None, timeout_s: float = 15.0) -> Findings:
    """Every finding about the settings in the environment and what they point at."""
    findings = Findings()
    for problem in unknown_variables(os.environ if environ is None else environ):
        findings.add("error", f"settings: {problem}")
    loaded = _settings(findings)
    if loaded is None:
        return findings
    settings, config = loaded
    rules = _rules(settings, findings)
    if await _broker(config, settings, findings, timeout_s):
        await _topics(config, findings, timeout_s)
    await _capillary(config, settings, rules, findings)
    return findings


def _settings(findings: Findings) -> tuple[Settings, ServiceConfig] | None:
    try:
        settings = load_settings()
        config = configure(settings)
    except SettingsError as exc:
        # One finding per variable: the message lists them, each naming its variable.
        for problem in str(exc).removeprefix("invalid settings: ").split("; "):
            findings.add("error", f"settings: {problem}")
        return None
    if not findings.failed:
        findings.add("ok", "settings: every PROMO_BRIDGE_* variable is known and valid")
    return settings, config


def _rules(settings: Settings, findings: Findings) -> RuleSet | None:
    try:
        rules = load_rules(settings.rules_file)
    except RulesError as exc:
        for problem in exc.problems:
            findings.add("error", f"rules: {problem}")
        return None
    for warning in rules.warnings:
        findings.add("warning", f"rules: {warning}")
    findings.add("ok", f"rules: {settings.rules_file}: {rules.summary()}")
    return rules


async def _broker(
    config: ServiceConfig, settings: Settings, findings: Findings, timeout_s: float
) -> bool:
    servers = settings.kafka_bootstrap_servers
    client = AIOKafkaClient(**config.kafka)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        findings.add(
            "error",
            f"broker: cannot reach {servers} ({ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS):"
            f" {type(exc).__name__}",
        )
        return False
    finally:
        await client.close()
    findings.add("ok", f"broker: {servers} reachable")
    return True


async def _topics(config: ServiceConfig, findings: Findings, timeout_s: float) -> None:
    restorer = OutcomeRestorer(
        config.kafka,
        group_id=config.consumer["group_id"],
        outcomes_topic=config.outcomes_topic,
        state_topic=config.state_topic,
        timeout_s=timeout_s,
    )
    try:
        await asyncio.wait_for(restorer.start(), timeout_s)
        await asyncio.wait_for(_topic_findings(restorer, config, findings), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        findings.add("error", f"topics: cannot describe them: {type(exc).__name__}")
    finally:
        await restorer.stop()


async def _topic_findings(
    restorer: OutcomeRestorer, config: ServiceConfig, findings: Findings
) -> None:
    inputs = config.loop.topics
    counts = await restorer.partition_counts([*inputs, config.outcomes_topic, config.dlq_topic])
    try:
        await restorer.check_copartitioned(inputs)
    except TopologyError as exc:
        findings.add("error", f"topics: {exc}")
    else:
        shapes = ", ".join(f"{topic} ({counts[topic]})" for topic in inputs)
        findings.add(
            "ok",
            f"topics: input {shapes}; outcomes {config.outcomes_topic}"
            f" ({counts[config.outcomes_topic]}) is at least as wide",
        )
    dlq = counts[config.dlq_topic]
    if dlq is None:
        findings.add(
            "error",
            f"topics: DLQ topic {config.dlq_topic} does not exist"
            f" ({ENV_PREFIX}DLQ_TOPIC): create it",
        )
    else:
        findings.add("ok", f"topics: DLQ {config.dlq_topic} ({dlq})")
    if config.state_topic is None:
        return
    try:
        shape = await restorer.check_state_topic(inputs)
    except TopologyError as exc:
        findings.add("error", f"topics: {exc}")
        return
    if shape is None:
        return
    state, needed = shape
    if state is None:
        findings.add(
            "ok",
            f"topics: state {config.state_topic} does not exist yet: `run` creates it"
            f" compacted with {needed} partitions",
        )
    else:
        findings.add("ok", f"topics: state {config.state_topic} ({state})")


async def _capillary(
    config: ServiceConfig, settings: Settings, rules: RuleSet | None, findings: Findings
) -> None:
    where = safe_url(settings.capillary_base_url)
    if settings.capillary_auth is AuthMode.BASIC:
        credentials = f"{ENV_PREFIX}CAPILLARY_TILL_CODE and {ENV_PREFIX}CAPILLARY_PASSWORD"
    else:
        credentials = f"{ENV_PREFIX}CAPILLARY_OAUTH_KEY and {ENV_PREFIX}CAPILLARY_OAUTH_SECRET"
    client_config = config.client.model_copy(update={"max_attempts": _PROBE_ATTEMPTS})
    async with CapillaryClient(client_config) as client:
        try:
            await prove_credentials(
                client, settings.capillary_auth is AuthMode.BASIC, probe_promotion(rules)
            )
        except AuthenticationFailed as exc:
            findings.add(
                "error",
                f"capillary: {where} refused the credentials (HTTP {exc.http_status},"
                f" code {exc.code}): check {credentials}",
            )
            return
        except ApiUnavailable as exc:
            findings.add(
                "error",
                f"capillary: {where} unavailable ({exc.reason}):"
                f" check {ENV_PREFIX}CAPILLARY_BASE_URL",
            )
            return
        except LookupFailedError as exc:
            # Refusals of the credentials are AuthenticationFailed: these were accepted.
            findings.add(
                "warning",
                f"capillary: {where} accepted the credentials but refused the probe lookup"
                f" (HTTP {exc.http_status}, code {exc.code})",
            )
            return
    findings.add("ok", f"capillary: {where} accepted the {settings.capillary_auth} credentials")
