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

from promo_bridge.capillary import CapillaryClient
from promo_bridge.domain.batcher import MicroBatcher
from promo_bridge.domain.offsets import OffsetTracker
from promo_bridge.domain.rules import RuleSet, load_rules
from promo_bridge.kafka._security import connection_options
from promo_bridge.kafka.consumer import ConsumerLoop, ConsumerLoopConfig
from promo_bridge.kafka.producer import RecordPublisher, producer_options
from promo_bridge.observability.http import Readiness, create_ops_app, serve_ops
from promo_bridge.observability.metrics import Metrics
from promo_bridge.pipeline import Pipeline, PipelineConfig
from promo_bridge.runtime_client import client_config, metrics_hooks
from promo_bridge.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class Service:
    """A running promo-bridge: what tests and the CLI hold on to."""

    settings: Settings
    metrics: Metrics
    rules: RuleSet
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    ops_port: int | None = None
    _loop: ConsumerLoop | None = None
    _pipeline: Pipeline | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def request_stop(self) -> None:
        """Begin graceful shutdown (what SIGTERM does)."""
        self.stop_event.set()

    def readiness(self) -> Readiness:
        """Partitions assigned, broker reachable, not paused for authentication."""
        loop, pipeline = self._loop, self._pipeline
        checks = {
            "partitions_assigned": bool(loop and loop.assigned),
            "broker_reachable": bool(loop and loop.broker_reachable),
            "api_authenticated": bool(pipeline and not pipeline.auth_failed),
            "not_stopping": not self.stop_event.is_set(),
        }
        return Readiness(ready=all(checks.values()), reasons=checks)


def build_service(settings: Settings) -> Service:
    """Load what can fail fast (rules) before anything connects."""
    rules = load_rules(settings.rules_file)
    return Service(settings=settings, metrics=Metrics(), rules=rules)


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


@contextlib.asynccontextmanager
async def _running(service: Service) -> AsyncIterator[ConsumerLoop]:
    settings = service.settings
    metrics = service.metrics
    common = connection_options(settings)
    producer = AIOKafkaProducer(
        **common, **producer_options(idempotence=settings.producer_idempotence)
    )
    consumer = AIOKafkaConsumer(
        **common,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.max_poll_records,
    )
    client = CapillaryClient(client_config(settings), hooks=metrics_hooks(metrics))
    pipeline = Pipeline(
        rules=service.rules,
        batcher=MicroBatcher(
            limits=client_config(settings).batch_limits, window_ms=settings.batch_window_ms
        ),
        tracker=OffsetTracker(),
        sender=client,
        sink=RecordPublisher(
            producer, outcomes_topic=settings.outcomes_topic, dlq_topic=settings.dlq_topic
        ),
        metrics=metrics,
        config=PipelineConfig(unavailable_retry_s=settings.unavailable_retry_s),
    )
    loop = ConsumerLoop(
        consumer,
        pipeline,
        metrics,
        ConsumerLoopConfig(
            topics=tuple(settings.input_topics),
            max_poll_records=settings.max_poll_records,
            commit_interval_s=settings.commit_interval_ms / 1000,
            drain_timeout_s=settings.drain_timeout_s,
            max_pending=settings.max_pending_commands,
            resume_below=settings.resume_below,
        ),
    )
    service._loop, service._pipeline = loop, pipeline
    app = create_ops_app(metrics, service.readiness)
    async with serve_ops(app, settings.http_host, settings.http_port) as port:
        service.ops_port = port
        await _wait_for_broker(common, service.stop_event)
        await producer.start()
        try:
            await consumer.start()
            dispatcher = asyncio.create_task(pipeline.run_dispatcher(), name="dispatcher")
            try:
                yield loop
            finally:
                await asyncio.shield(_shutdown(settings, loop, pipeline, consumer, dispatcher))
        finally:
            await asyncio.shield(producer.stop())
            await client.aclose()


class _StoppedBeforeStartError(Exception):
    """A stop was requested while waiting for the broker at start-up."""


async def _wait_for_broker(options: dict[str, Any], stop: asyncio.Event) -> None:
    """Wait until a bootstrap broker answers, with backoff; alive but not ready meanwhile.

    Kubernetes restarts a crashed pod with growing delays and no signal to operators beyond the
    restart count; waiting here keeps /healthz up and /readyz saying why it is not ready.
    """
    delay_s = 0.5
    while True:
        client = AIOKafkaClient(**options)
        try:
            await client.bootstrap()
        except KafkaError as exc:
            log.warning("kafka_unreachable_at_startup", error=repr(exc), retry_in_s=delay_s)
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


async def _shutdown(
    settings: Settings,
    loop: ConsumerLoop,
    pipeline: Pipeline,
    consumer: AIOKafkaConsumer,
    dispatcher: asyncio.Task[None],
) -> None:
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
    await consumer.stop()


def _install_signal_handlers(service: Service) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
