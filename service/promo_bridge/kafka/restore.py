"""Reading a partition's completed work back from the outcomes topic when it is assigned.

Outcomes are co-partitioned with the input (an outcome goes to the outcomes partition numbered
like its event's partition), and every committed input offset carries a restore mark in its
commit metadata: the outcomes offset from which the outcomes of the events at or above it lie
(domain/restore.py). On assignment the new owner reads each outcomes partition from the lowest
mark of its input partitions to the end: the command_ids found there are complete and are not
sent or published again, whatever died before (SIGKILL, OOM, node loss). The state lives in
Kafka, follows the partitions, and needs no other store.

Start-up checks that the outcomes topic exists and has at least as many partitions as every
input topic, so that co-partitioning holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from promo_bridge.domain.restore import RestoredOutcome

log = structlog.get_logger(__name__)

_MARK_PREFIX: Final = "promo-bridge:outcomes="
_POLL_MS: Final = 200
_TOPIC_ALREADY_EXISTS: Final = 36
_STATE_REPLICAS: Final = 3


class TopologyError(Exception):
    """The topics do not have the shape the service needs; the message says how to fix it."""


class RestoreError(Exception):
    """Completed work could not be read back in time; the message says why."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What was read back for one assigned input partition."""

    outcomes: tuple[RestoredOutcome, ...]
    # The outcomes partition's end when it was read: later outcomes lie beyond it.
    outcomes_end: int
    # Whether the committed offset carried a mark (else nothing could be read back).
    had_mark: bool


def encode_mark(outcomes_offset: int | None) -> str:
    """Commit metadata holding a restore mark ("" when there is none)."""
    return "" if outcomes_offset is None else f"{_MARK_PREFIX}{outcomes_offset}"


def decode_mark(metadata: str | None) -> int | None:
    """The restore mark in commit metadata, or None (absent, or written by something else)."""
    if not metadata or not metadata.startswith(_MARK_PREFIX):
        return None
    text = metadata.removeprefix(_MARK_PREFIX)
    return int(text) if text.isdigit() else None


class OutcomeRestorer:
    """Reads back completed command_ids for assigned partitions (see the module docstring)."""

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        group_id: str,
        outcomes_topic: str,
        state_topic: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._options = dict(options)
        self._group_id = group_id
        self._outcomes_topic = outcomes_topic
        self._state_topic = state_topic
        self._timeout_s = timeout_s
        # One past the newest outcomes offset known per outcomes partition (from read-backs).
        self._known_ends: dict[int, int] = {}
        self._reading = asyncio.Lock()
        self._admin = AIOKafkaAdminClient(**self._options)
        self._reader = AIOKafkaConsumer(
            **self._options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Outcomes are read whole; they are small JSON records.
            max_partition_fetch_bytes=1 << 20,
        )

    async def start(self) -> None:
        """Connect the admin client and the reader."""
        await self._admin.start()
        await self._reader.start()

    async def stop(self) -> None:
        """Disconnect."""
        with contextlib.suppress(KafkaError):
            await self._reader.stop()
        with contextlib.suppress(KafkaError):
            await self._admin.close()

    async def check_copartitioned(self, input_topics: Iterable[str]) -> None:
        """TopologyError unless the outcomes topic has as many partitions as any input topic."""
        counts = await self._partition_counts([self._outcomes_topic, *input_topics])
        outcomes = counts.pop(self._outcomes_topic)
        missing = sorted(topic for topic, count in counts.items() if count is None)
        if missing:
            raise TopologyError(f"input topic(s) {', '.join(missing)} do not exist: create them")
        widest = max((count or 0) for count in counts.values())
        if outcomes is None:
            raise TopologyError(
                f"outcomes topic {self._outcomes_topic} does not exist: create it with at least"
                f" {widest} partitions (as many as the widest input topic)"
            )
        if outcomes < widest:
            narrow = ", ".join(
                f"{t} ({c})" for t, c in sorted(counts.items()) if (c or 0) > outcomes
            )
            raise TopologyError(
                f"outcomes topic {self._outcomes_topic} has {outcomes} partitions but input"
                f" {narrow} has more: outcomes are co-partitioned with the input, so give the"
                f" outcomes topic at least {widest} partitions"
            )

    async def ensure_state_topic(self, input_topics: Iterable[str]) -> None:
        """Create the compacted state topic if it is missing; TopologyError if it cannot hold.

        The holdings ledger is co-partitioned with the input, so every input topic must have
        the same partition count (a customer's events of every topic then share a partition
        number), and the state topic at least as many.
        """
        shape = await self.check_state_topic(input_topics)
        if self._state_topic is not None and shape is not None and shape[0] is None:
            await self._create_state_topic(self._state_topic, shape[1])

    async def check_state_topic(self, input_topics: Iterable[str]) -> tuple[int | None, int] | None:
        """What `ensure_state_topic` checks, creating nothing (for `promo-bridge check`).

        Returns the state topic's partition count (None when it is missing) and the count it
        needs, or None when the state is not durable; TopologyError when it cannot hold.
        """
        if self._state_topic is None:
            return None
        topic = self._state_topic
        counts = await self._partition_counts([topic, *input_topics])
        state = counts.pop(topic)
        widths = {count for count in counts.values() if count is not None}
        if len(widths) > 1:
            shapes = ", ".join(f"{t} ({c})" for t, c in sorted(counts.items()))
            raise TopologyError(
                f"input topics {shapes} differ in partition count: the ledger in {topic} is"
                " co-partitioned with the input, so give every input topic the same count"
                " (or set PROMO_BRIDGE_DURABLE_STATE=false)"
            )
        widest = max(widths, default=1)
        if state is not None and state < widest:
            raise TopologyError(
                f"state topic {topic} has {state} partitions but the input topics have"
                f" {widest}: give it at least {widest}"
            )
        return state, widest

    async def partition_counts(self, topics: Iterable[str]) -> dict[str, int | None]:
        """Each topic's partition count, None for a missing one; read-only."""
        return await self._partition_counts(list(topics))

    async def _create_state_topic(self, topic: str, partitions: int) -> None:
        try:
            cluster = await self._admin.describe_cluster()
            # Three copies where the cluster has them (as Kafka Streams asks for its changelogs).
            replicas = max(1, min(_STATE_REPLICAS, len(cluster.get("brokers", ()))))
            new = NewTopic(
                name=topic,
                num_partitions=partitions,
                replication_factor=replicas,
                topic_configs={"cleanup.policy": "compact"},
            )
            response = await self._admin.create_topics([new])
        except KafkaError as exc:
            raise TopologyError(
                f"state topic {topic} does not exist and cannot be created ({exc!r}): create it"
                f" compacted (cleanup.policy=compact) with {partitions} partitions"
            ) from None
        for _name, code, *rest in getattr(response, "topic_errors", ()):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                message = rest[0] if rest else ""
                raise TopologyError(
                    f"state topic {topic} does not exist and cannot be created (error {code}"
                    f" {message}): create it compacted (cleanup.policy=compact) with"
                    f" {partitions} partitions"
                )
        log.info("state_topic_created", topic=topic, partitions=partitions, replicas=replicas)

    async def read_state(
        self, partitions: Iterable[int]
    ) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """Read state partitions whole (key, value) in order; RestoreError when it cannot."""
        if self._state_topic is None:
            return {}
        sources = [TopicPartition(self._state_topic, p) for p in partitions]
        if not sources:
            return {}
        try:
            return await asyncio.wait_for(self._read_state(sources), self._timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise RestoreError(f"reading back {self._state_topic}: {exc!r}") from None

    async def _read_state(
        self, sources: list[TopicPartition]
    ) -> dict[int, list[tuple[bytes, bytes | None]]]:
        started = time.monotonic()
        beginnings: dict[TopicPartition, int] = await self._reader.beginning_offsets(sources)
        ends: dict[TopicPartition, int] = await self._reader.end_offsets(sources)
        records: dict[int, list[tuple[bytes, bytes | None]]] = {tp.partition: [] for tp in sources}
        async with self._reading:
            await self._scan(
                beginnings,
                ends,
                lambda tp, batch: records[tp.partition].extend(
                    (r.key, r.value) for r in batch if r.key is not None
                ),
            )
        log.info(
            "state_read",
            partitions=sorted(records),
            records=sum(len(r) for r in records.values()),
            seconds=round(time.monotonic() - started, 3),
        )
        return records

    async def _partition_counts(self, topics: list[str]) -> dict[str, int | None]:
        return await count_partitions(self._admin, topics)

    async def restore(self, assigned: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Restored]:
        """Read back the completed work of input partitions; RestoreError when it cannot."""
        tps = [TopicPartition(topic, partition) for topic, partition in assigned]
        if not tps:
            return {}
        try:
            return await asyncio.wait_for(self._restore(tps), self._timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise RestoreError(f"reading back {self._outcomes_topic}: {exc!r}") from None

    async def _restore(self, tps: list[TopicPartition]) -> dict[tuple[str, int], Restored]:
        committed: dict[
            TopicPartition, OffsetAndMetadata
        ] = await self._admin.list_consumer_group_offsets(self._group_id, partitions=tps)
        marks = {tp: decode_mark(meta.metadata) for tp, meta in committed.items()}
        # A partition committed to its end has nothing to re-read, however old its mark.
        input_ends: dict[TopicPartition, int] = await self._reader.end_offsets(tps)
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            mark = marks.get(tp)
            if mark is not None and committed[tp].offset < input_ends[tp]:
                source = TopicPartition(self._outcomes_topic, tp.partition)
                starts[source] = min(mark, starts.get(source, mark))
        sources = {TopicPartition(self._outcomes_topic, tp.partition) for tp in tps}
        ends: dict[TopicPartition, int] = await self._reader.end_offsets(list(sources))
        for source, end in ends.items():
            self._known_ends[source.partition] = max(end, self._known_ends.get(source.partition, 0))
        started = time.monotonic()
        completed = await self._read(starts, ends)
        found = sum(len(outcomes) for outcomes in completed.values())
        log.info(
            "outcomes_read_back",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in tps),
            records_from={f"{s.partition}": o for s, o in starts.items()},
            commands=found,
            seconds=round(time.monotonic() - started, 3),
        )
        result = {}
        for tp in tps:
            source = TopicPartition(self._outcomes_topic, tp.partition)
            result[(tp.topic, tp.partition)] = Restored(
                outcomes=tuple(completed.get(source, ())),
                outcomes_end=ends[source],
                had_mark=marks.get(tp) is not None,
            )
        return result

    def known_end(self, partition: int) -> int | None:
        """An outcomes offset of `partition` below which nothing written from now on can lie."""
        return self._known_ends.get(partition)

    async def find(self, since: Mapping[int, int], command_ids: set[str]) -> dict[str, int]:
        """Which of `command_ids` lie in the outcomes partitions from `since`, and at what offset.

        For a publish whose fate is unknown (the broker went away before answering): what
        landed is not published again.
        """
        sources = {TopicPartition(self._outcomes_topic, p): start for p, start in since.items()}
        try:
            ends: dict[TopicPartition, int] = await asyncio.wait_for(
                self._reader.end_offsets(list(sources)), self._timeout_s
            )
            found = await asyncio.wait_for(self._read(sources, ends), self._timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise RestoreError(f"reading back {self._outcomes_topic}: {exc!r}") from None
        return {
            outcome.command_id: outcome.outcomes_offset
            for outcomes in found.values()
            for outcome in outcomes
            if outcome.command_id in command_ids
        }

    async def _read(
        self, starts: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, list[RestoredOutcome]]:
        # The reader serves assignments and publishes alike: one read at a time.
        async with self._reading:
            return await self._read_unlocked(starts, ends)

    async def _read_unlocked(
        self, starts: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, list[RestoredOutcome]]:
        completed: dict[TopicPartition, list[RestoredOutcome]] = {
            tp: [] for tp, start in starts.items() if start < ends[tp]
        }
        await self._scan(starts, ends, lambda tp, batch: completed[tp].extend(_outcomes(batch)))
        return completed

    async def _scan(
        self,
        starts: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int],
        take: Callable[[TopicPartition, list[Any]], None],
    ) -> None:
        """Hand every record from `starts` up to `ends` to `take`, partition by partition."""
        todo = {tp: start for tp, start in starts.items() if start < ends[tp]}
        if not todo:
            return
        self._reader.assign(list(todo))
        for tp, start in todo.items():
            self._reader.seek(tp, start)
        remaining = set(todo)
        while remaining:
            batches = await self._reader.getmany(*remaining, timeout_ms=_POLL_MS)
            for tp, records in batches.items():
                take(tp, records)
            for tp in list(remaining):
                if await self._reader.position(tp) >= ends[tp]:
                    remaining.discard(tp)


async def count_partitions(
    admin: AIOKafkaAdminClient, topics: Iterable[str]
) -> dict[str, int | None]:
    """Each topic's partition count, None for a missing one; read-only (creates no topic)."""
    wanted = list(dict.fromkeys(topics))
    # Listing first: a metadata request naming a missing topic may create it (broker
    # auto-creation), with the wrong partition count.
    known = set(await admin.list_topics())
    existing = [topic for topic in wanted if topic in known]
    described = await admin.describe_topics(existing) if existing else []
    counts: dict[str, int | None] = dict.fromkeys(wanted)
    for topic in described:
        counts[topic["topic"]] = len(topic["partitions"])
    return counts


def _outcomes(records: Iterable[Any]) -> Iterable[RestoredOutcome]:
    for record in records:
        try:
            outcome = json.loads(record.value)
            restored = RestoredOutcome(
                command_id=str(outcome["command_id"]),
                source=(str(outcome["topic"]), int(outcome["partition"])),
                source_offset=int(outcome["offset"]),
                outcomes_offset=record.offset,
                status=str(outcome.get("status") or ""),
                issual_id=outcome.get("issual_id"),
                earned_id=outcome.get("earned_id"),
                order_id=outcome.get("order_id"),
            )
        except (ValueError, TypeError, KeyError):
            # Not an outcome of ours (the topic is shared, or a record was damaged).
            continue
        yield restored
