"""The consumer loop frees what paused partitions left behind when they resume, rate-bound."""

from __future__ import annotations

from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from promo_bridge.domain.flow import PauseReason
from promo_bridge.kafka.consumer import (
    COLLECT_ON_RESUME_MIN_INTERVAL_S,
    ConsumerLoop,
    ConsumerLoopConfig,
)
from promo_bridge.observability.metrics import Metrics
from promo_bridge.pipeline import Pipeline

PARTITIONS = {TopicPartition("orders", 0), TopicPartition("orders", 1)}


class _Consumer:
    """Assignment, pause and resume, as the flow control uses them."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(PARTITIONS)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)


class _Pipeline:
    """A pipeline whose pressure the test sets."""

    pending = 0
    reason: PauseReason | None = None

    def pause_reason(self) -> PauseReason | None:
        return self.reason


def test_resuming_collects_garbage_at_most_once_per_interval() -> None:
    """Each resume collects, unless the last collection was under the interval ago."""
    now = [100.0]
    collections: list[float] = []
    consumer, pipeline = _Consumer(), _Pipeline()

    def collect() -> int:
        collections.append(now[0])
        return 0

    loop = ConsumerLoop(
        cast(AIOKafkaConsumer, consumer),
        cast(Pipeline, pipeline),
        Metrics(),
        ConsumerLoopConfig(topics=("orders",)),
        clock=lambda: now[0],
        collect_garbage=collect,
    )

    def pressure(reason: PauseReason | None, at: float) -> None:
        now[0] = at
        pipeline.reason = reason
        loop._apply_flow_control()  # the flow control is the unit here

    pressure(PauseReason.BACKPRESSURE, 100.0)
    assert consumer.paused == PARTITIONS
    assert collections == []
    pressure(None, 101.0)
    assert (consumer.paused, collections) == (set(), [101.0])
    pressure(PauseReason.BACKPRESSURE, 102.0)
    pressure(None, 101.0 + COLLECT_ON_RESUME_MIN_INTERVAL_S - 0.5)
    assert collections == [101.0]
    pressure(PauseReason.BACKPRESSURE, 107.0)
    pressure(None, 108.0)
    assert collections == [101.0, 108.0]
