"""The org's API budget split by input partitions: client shares, consumer reports, runtime glue."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from capillary_fakes import applied_for, batch, command, config, make_client

from promo_bridge.domain.commands import Endpoint
from promo_bridge.kafka.consumer import ConsumerLoop, ConsumerLoopConfig
from promo_bridge.observability.metrics import Metrics
from promo_bridge.pipeline import Pipeline
from promo_bridge.runtime_client import BudgetShare

TOPICS = ("orders", "returns")


def _limits(client: Any) -> dict[str, int]:
    return {name: limit for name, (_, limit) in client.budget_use().items()}


def _gauge(metrics: Metrics, endpoint: str) -> float | None:
    return metrics.registry.get_sample_value(
        "promo_bridge_api_budget_calls_per_minute", {"endpoint": endpoint}
    )


def _ok_client(**overrides: Any) -> Any:
    client, _, _ = make_client(
        lambda r: httpx.Response(200, json=applied_for(r)), cfg=config(**overrides)
    )
    return client


def test_share_floors_every_budget_by_the_partitions_held() -> None:
    """2 of 6 partitions of a 100/min budget is 33 per endpoint; 7 lookups/min give 2."""
    client = _ok_client(calls_per_minute=100, lookup_calls_per_minute=7)
    calls = client.set_budget_share(2, 6)
    assert calls == _limits(client)
    assert {calls[e.value] for e in Endpoint} == {33}
    assert calls["promotionData"] == 2
    assert set(client.set_budget_share(6, 6).values()) == {100, 7}


def test_shares_of_all_replicas_never_add_up_to_more_than_the_budget() -> None:
    """However 12 partitions are spread over replicas, the floors sum to at most the budget."""
    client = _ok_client(calls_per_minute=100, lookup_calls_per_minute=100)
    for spread in ([12], [6, 6], [5, 4, 3], [1] * 12, [7, 5, 0]):
        total = sum(client.set_budget_share(n, 12)["enrolAndEarn"] for n in spread)
        assert total <= 100
        assert total > 100 - len(spread)


def test_share_refuses_more_partitions_than_there_are() -> None:
    """assigned > total is a caller bug, not a budget above the org's."""
    client = _ok_client()
    with pytest.raises(ValueError, match="assigned"):
        client.set_budget_share(4, 3)


async def test_no_share_holds_calls_until_partitions_arrive() -> None:
    """At a share of 0 a send waits; once partitions are assigned it goes out."""
    client = _ok_client(calls_per_minute=60)
    client.set_budget_share(0, 0)
    sending = asyncio.ensure_future(client.send(batch([command(1)])))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not sending.done()
    client.set_budget_share(1, 3)
    results = await asyncio.wait_for(sending, 5.0)
    assert [r.command_id for r in results] == [command(1).command_id]
    await client.aclose()


def test_budget_share_with_partitions_starts_at_zero_and_logs_each_change() -> None:
    """split=partitions: gauge 0 before any assignment; apply logs api_budget_share and sets it."""
    client, metrics = _ok_client(calls_per_minute=90, lookup_calls_per_minute=30), Metrics()
    share = BudgetShare(client, metrics, "partitions")
    assert _gauge(metrics, "enrolAndEarn") == 0
    with structlog.testing.capture_logs() as logs:
        share.apply(1, 3)
    assert _gauge(metrics, "enrolAndEarn") == 30
    assert _gauge(metrics, "promotionData") == 10
    (line,) = [entry for entry in logs if entry["event"] == "api_budget_share"]
    assert (line["assigned"], line["total"]) == (1, 3)
    assert line["calls_per_minute"]["unEnroll"] == 30


def test_budget_share_warns_when_a_held_partition_gets_no_call() -> None:
    """A budget below the partition count leaves a replica with partitions and 0 calls: said."""
    client = _ok_client(calls_per_minute=5, lookup_calls_per_minute=5)
    share = BudgetShare(client, Metrics(), "partitions")
    with structlog.testing.capture_logs() as logs:
        share.apply(1, 12)
    assert [e["event"] for e in logs] == ["api_budget_share", "api_budget_share_empty"]


def test_budget_share_none_keeps_the_whole_budget() -> None:
    """split=none: the replica keeps the whole figures whatever it is assigned."""
    client, metrics = _ok_client(calls_per_minute=90), Metrics()
    share = BudgetShare(client, metrics, "none")
    share.apply(0, 6)
    assert set(_limits(client).values()) == {90, 100}
    assert _gauge(metrics, "revokeEnrolAndEarn") == 90


class _FakeConsumer:
    """What the loop's rebalance callbacks ask of the consumer."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions
        self.owned: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return None if count is None else set(range(count))


class _IdlePipeline:
    """A pipeline with nothing pending: drains at once, commits nothing."""

    pending = 0

    async def drain(self, _keys: object, _timeout_s: float) -> bool:
        return True

    def expire_state(self) -> None:
        return None

    def committable(self) -> dict[tuple[str, int], int]:
        return {}

    def forget(self, _keys: object) -> None:
        return None


async def test_consumer_reports_its_share_on_assignment_and_zero_after_revocation() -> None:
    """Assigned 2 of each of two 3-partition topics: 4/6; revoked (eager): 0/6 after the drain."""
    consumer = _FakeConsumer({"orders": 3, "returns": 3})
    shares: list[tuple[int, int]] = []
    loop = ConsumerLoop(
        cast(AIOKafkaConsumer, consumer),
        cast(Pipeline, _IdlePipeline()),
        Metrics(),
        ConsumerLoopConfig(topics=TOPICS),
        on_share=lambda assigned, total: shares.append((assigned, total)),
    )
    owned = {TopicPartition(t, p) for t in TOPICS for p in (0, 1)}
    consumer.owned = owned
    await loop.on_assigned(owned)
    await loop.on_revoked(owned)
    assert shares == [(4, 6), (0, 6)]
