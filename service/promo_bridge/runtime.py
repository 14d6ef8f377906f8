"""Wires the parts from settings, owns start-up and graceful shutdown.

Shutdown order (SIGTERM or SIGINT): stop fetching, flush every bucket, wait for in-flight
calls (bounded by drain_timeout_s), publish their outcomes, commit, then close the consumer
(leaving the group), the producer and the HTTP client. Final writes are shielded from
cancellation so a second signal cannot cut a commit in half.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from promo_bridge.bootstrap import ServiceConfig, configure, kafka_startup_problem
from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    CapillaryClient,
    LookupFailedError,
)
from promo_bridge.domain.flow import Flow
from promo_bridge.domain.rules import RuleSet, load_rules
from promo_bridge.kafka.consumer import ConsumerLoop
from promo_bridge.kafka.producer import RecordPublisher
from promo_bridge.kafka.restore import OutcomeRestorer
from promo_bridge.observability.http import Readiness, create_ops_app, serve_ops
from promo_bridge.observability.metrics import Metrics
from promo_bridge.observability.status import BudgetUse, StatusSnapshot
from promo_bridge.pipeline import Pipeline
from promo_bridge.runtime_banner import effective_config, safe_url
from promo_bridge.runtime_client import (
    BudgetShare,
    CapillarySender,
    metrics_hooks,
    probe_promotion,
    prove_credentials,
)
from promo_bridge.settings import ENV_PREFIX, AuthMode, Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Parts:
    """The running components, built together in one place (`_assemble`)."""

    consumer: AIOKafkaConsumer
    restorer: OutcomeRestorer
    publisher: RecordPublisher
    client: CapillaryClient
    pipeline: Pipeline
    loop: ConsumerLoop


@dataclass
class Service:
    """A promo-bridge: its checked configuration and rules, and its parts while it runs.

    `build_service` makes it without connecting anywhere; `run_service` builds the parts inside
    the event loop (aiokafka needs one) and runs them.
    """

    settings: Settings
    config: ServiceConfig
    metrics: Metrics
    rules: RuleSet
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ops_port: int | None = None
    _parts: _Parts | None = None
    # Set once Capillary accepted the credentials (a token, or a lookup that changes nothing):
    # until then the instance is not ready, whatever else holds.
    credentials_proven: bool = False

    def request_stop(self) -> None:
        """Begin graceful shutdown (what SIGTERM does)."""
        self.stop_event.set()

    def readiness(self) -> Readiness:
        """Partitions assigned, broker reachable, credentials accepted, work moving."""
        parts = self._parts
        checks = {
            "partitions_assigned": bool(parts and parts.loop.assigned),
            "broker_reachable": bool(parts and parts.loop.broker_reachable),
            "api_authenticated": bool(
                parts
                and (self.credentials_proven or parts.pipeline.api_answered)
                and not parts.pipeline.auth_failed
            ),
            "making_progress": bool(
                parts and parts.pipeline.seconds_without_progress() < self.config.stall_timeout_s
            ),
            "not_stopping": not self.stop_event.is_set(),
        }
        return Readiness(ready=all(checks.values()), reasons=checks)

    def status(self) -> StatusSnapshot:
        """What /status shows: partitions and lag, pending work, pauses, budgets, recent trouble."""
        state = self.readiness()
        parts = self._parts
        if parts is None:
            return StatusSnapshot(
                ready=state.ready,
                checks=state.reasons,
                pause_reason=None,
                pending=0,
                pending_dead_letter_bytes=0,
            )
        pipeline = parts.pipeline
        reason = pipeline.pause_reason()
        return StatusSnapshot(
            ready=state.ready,
            checks=state.reasons,
            pause_reason=None if reason is None else reason.value,
            pending=pipeline.pending,
            pending_dead_letter_bytes=pipeline.pending_dead_letter_bytes,
            partitions=parts.loop.partition_status(),
            budgets=[
                BudgetUse(endpoint, used, limit)
                for endpoint, (used, limit) in parts.client.budget_use().items()
            ],
            recent_outcomes=list(pipeline.recent_outcomes),
            recent_dead_letters=list(pipeline.recent_dead_letters),
        )


def build_service(settings: Settings) -> Service:
    """Check what can fail fast (every component's configuration, the rules) before connecting.

    Raises SettingsError naming the variable, or RulesError naming file, line and rule.
    """
    config = configure(settings)
    # What this instance runs with, in one line, before anything can go wrong with it.
    log.info("service_config", **effective_config(settings))
    rules = load_rules(settings.rules_file)
    for warning in rules.warnings:
        log.warning(
            "rules_warning",
            file=warning.file,
            line=warning.line,
            rule=warning.rule,
            message=warning.message,
        )
    return Service(settings=settings, config=config, metrics=Metrics(), rules=rules)


async def run_service(service: Service, *, install_signals: bool = True) -> None:
    """Run until request_stop() or a signal, then shut down gracefully."""
    settings = service.settings
    if install_signals:
        _install_signal_handlers(service)
    async with contextlib.AsyncExitStack() as stack:
        try:
            loop = await stack.enter_async_context(_running(service))
        except _StoppedBeforeStartError:
            log.info("service_stopped_before_start")
            return
        service.started.set()
        log.info(
            "service_started",
            topics=settings.input_topics,
            group_id=settings.group_id,
            ops_port=service.ops_port,
        )
        await loop.run(service.stop_event)
    log.info("service_stopped")


def _assemble(service: Service) -> _Parts:
    """Every component from its configuration; the one place where they are wired."""
    config, metrics = service.config, service.metrics
    restorer = OutcomeRestorer(
        config.kafka,
        group_id=config.consumer["group_id"],
        outcomes_topic=config.outcomes_topic,
        state_topic=config.state_topic,
    )
    publisher = RecordPublisher(
        lambda: AIOKafkaProducer(**config.kafka, **config.producer),
        outcomes_topic=config.outcomes_topic,
        dlq_topic=config.dlq_topic,
        state_topic=config.state_topic,
        on_replace=metrics.producer_replacements.inc,
        read_back=restorer,
    )
    consumer = AIOKafkaConsumer(**config.kafka, **config.consumer)
    client = CapillaryClient(config.client, hooks=metrics_hooks(metrics))
    pipeline = Pipeline(
        flow=Flow(service.rules, config.flow),
        sender=CapillarySender(client, metrics),
        sink=publisher,
        metrics=metrics,
        config=config.pipeline,
    )
    share = BudgetShare(client, metrics, config.budget_split)
    loop = ConsumerLoop(
        consumer, pipeline, metrics, config.loop, restorer=restorer, on_share=share.apply
    )
    metrics.seconds_without_progress.set_function(pipeline.seconds_without_progress)
    return _Parts(
        consumer=consumer,
        restorer=restorer,
        publisher=publisher,
        client=client,
        pipeline=pipeline,
        loop=loop,
    )


@contextlib.asynccontextmanager
async def _running(service: Service) -> AsyncIterator[ConsumerLoop]:
    config = service.config
    parts = service._parts = _assemble(service)
    app = create_ops_app(service.metrics, service.readiness, service.status)
    # Whatever started is stopped, in reverse order, however start-up or the run ends.
    async with contextlib.AsyncExitStack() as started:
        started.push_async_callback(parts.client.aclose)
        # Stopping a Kafka client that never started is harmless, and leaves no warning.
        started.push_async_callback(parts.consumer.stop)
        # Before its start, like the consumer: its reader exists from construction, and a
        # start-up that fails earlier (busy ops port, no broker) must still close it.
        started.push_async_callback(parts.restorer.stop)
        started.push_async_callback(lambda: asyncio.shield(parts.publisher.stop()))
        service.ops_port = await started.enter_async_context(
            serve_ops(app, config.ops_host, config.ops_port)
        )
        await _wait_for_broker(service.settings, dict(config.kafka), service.stop_event)
        await parts.restorer.start()
        await parts.restorer.check_copartitioned(config.loop.topics)
        await parts.restorer.ensure_state_topic(config.loop.topics)
        await parts.publisher.start()
        await parts.consumer.start()
        dispatcher = asyncio.create_task(parts.pipeline.run_dispatcher(), name="dispatcher")
        prover = asyncio.create_task(_prove_credentials(service, parts), name="credentials")
        started.push_async_callback(_cancel, prover)
        try:
            yield parts.loop
        finally:
            await asyncio.shield(_shutdown(service.settings, parts, dispatcher))


async def _prove_credentials(service: Service, parts: _Parts, retry_s: float = 5.0) -> None:
    """Prove the Capillary credentials at start-up; retry until they are accepted.

    A wrong password or an unreachable base URL shows at once, in /readyz and in one log line
    naming the variables, instead of at the first event.
    """
    settings = service.settings
    basic = settings.capillary_auth is AuthMode.BASIC
    where = safe_url(settings.capillary_base_url)
    probe = probe_promotion(service.rules)
    said = ""
    while True:
        try:
            await prove_credentials(parts.client, basic, probe)
        except AuthenticationFailed as exc:
            variables = "CAPILLARY_TILL_CODE/_PASSWORD" if basic else "CAPILLARY_OAUTH_KEY/_SECRET"
            event = "capillary_credentials_refused"
            line = f"{where} refused the credentials (HTTP {exc.http_status}, code {exc.code})"
            check = f"{ENV_PREFIX}{variables}"
        except ApiUnavailable as exc:
            event = "capillary_unreachable"
            line = f"{where} unavailable ({exc.reason})"
            check = f"{ENV_PREFIX}CAPILLARY_BASE_URL"
        except LookupFailedError:
            # The lookup was refused for what it asked, after the credentials were taken.
            service.credentials_proven = True
            return
        else:
            service.credentials_proven = True
            log.info(
                "capillary_credentials_accepted", base_url=where, auth=settings.capillary_auth.value
            )
            return
        if line != said:
            log.error(event, problem=line, check=check)
            said = line
        await asyncio.sleep(retry_s)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _StoppedBeforeStartError(Exception):
    """A stop was requested while waiting for the broker at start-up."""


async def _wait_for_broker(
    settings: Settings, options: dict[str, Any], stop: asyncio.Event
) -> None:
    """Wait until a bootstrap broker answers, with backoff; alive but not ready meanwhile.

    Kubernetes restarts a crashed pod with growing delays and no signal to operators beyond the
    restart count; waiting here keeps /healthz up and /readyz saying why it is not ready. The
    log line names the setting to fix (a refused password, an untrusted certificate), once per
    change of the problem.
    """
    delay_s = 0.5
    said: str | None = None
    while True:
        client = AIOKafkaClient(**options)
        try:
            await client.bootstrap()
        except KafkaError as exc:
            problem = await kafka_startup_problem(settings)
            if problem != said:
                log.error(  # noqa: TRY400 - the problem line says it all; a traceback adds nothing
                    "kafka_unreachable_at_startup", problem=problem, error=repr(exc)
                )
                said = problem
            else:
                log.warning("kafka_unreachable_at_startup", problem=problem, retry_in_s=delay_s)
        else:
            return
        finally:
            await client.close()
        try:
            await asyncio.wait_for(stop.wait(), delay_s)
        except TimeoutError:
            delay_s = min(delay_s * 2, 30.0)
        else:
            raise _StoppedBeforeStartError


async def _shutdown(settings: Settings, parts: _Parts, dispatcher: asyncio.Task[None]) -> None:
    pipeline, loop = parts.pipeline, parts.loop
    log.info("shutdown_draining", pending=pipeline.pending)
    drained = await pipeline.drain(None, settings.drain_timeout_s)
    await loop.commit()
    if not drained:
        log.warning("shutdown_drain_timeout", pending=pipeline.pending)
    dispatcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dispatcher
    await pipeline.aclose()
    # Leaves the group. aiokafka does not call the revoke callback here (unless a rebalance is
    # under way): the drain and commit above are what hand the partitions over cleanly.
    await parts.consumer.stop()


def _install_signal_handlers(service: Service) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
