"""Publishing outcome and DLQ records, acknowledged by the broker before offsets move."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from promo_bridge.domain.dead_letters import DeadLetterRecord
from promo_bridge.domain.outcomes import OutcomeRecord

log = structlog.get_logger(__name__)


class RecordPublisher:
    """Sends outcome records (keyed by customer) and DLQ records (keyed like the original)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        outcomes_topic: str,
        dlq_topic: str,
    ) -> None:
        self._producer = producer
        self._outcomes_topic = outcomes_topic
        self._dlq_topic = dlq_topic

    async def publish_outcomes(self, records: Sequence[OutcomeRecord]) -> None:
        """Send every record and return once the broker acknowledged all of them."""
        futures = [
            await self._producer.send(
                self._outcomes_topic,
                value=record.model_dump_json().encode(),
                key=record.identifier_value.encode(),
            )
            for record in records
        ]
        await asyncio.gather(*futures)

    async def publish_dead_letter(
        self,
        record: DeadLetterRecord,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Send one DLQ record with the original headers; returns once acknowledged."""
        future = await self._producer.send(
            self._dlq_topic,
            value=record.model_dump_json().encode(),
            key=key,
            headers=list(headers),
        )
        await future


def producer_options(*, idempotence: bool) -> dict[str, Any]:
    """Producer settings: every record acknowledged by all in-sync replicas."""
    return {
        "acks": "all",
        "enable_idempotence": idempotence,
        "linger_ms": 5,
        "request_timeout_ms": 30_000,
    }
