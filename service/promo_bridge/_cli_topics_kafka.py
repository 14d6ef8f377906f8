"""The Kafka side of `topics create`, `produce`, `tail` and `dlq replay` (see _cli_topics.py).

Each takes the service's configuration (so TLS and SASL are the service's own), prints one
line per topic or record, and returns the exit code. None of them joins a consumer group.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from promo_bridge import _cli_topics_format as fmt
from promo_bridge.bootstrap import ServiceConfig
from promo_bridge.kafka.records import OutgoingRecord, follow, read_to_end, send
from promo_bridge.kafka.restore import count_partitions

# Kafka's TOPIC_ALREADY_EXISTS: another process created it between the listing and here.
_TOPIC_ALREADY_EXISTS: Final = 36
_MAX_REPLICAS: Final = 3


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A topic the service needs, and the partition count it must have."""

    role: str
    name: str
    # "exact": the input topics, all of one width (co-partitioning); "at_least": the outcomes
    # and state topics (co-partitioned with the input); "any": the DLQ (not partitioned by use).
    rule: Literal["exact", "at_least", "any"]
    configs: Mapping[str, str]


def _wanted(config: ServiceConfig) -> list[_Wanted]:
    topics = [_Wanted("input", name, "exact", {}) for name in config.loop.topics]
    topics.append(_Wanted("outcomes", config.outcomes_topic, "at_least", {}))
    topics.append(_Wanted("DLQ", config.dlq_topic, "any", {}))
    if config.state_topic is not None:
        # The holdings ledger: the latest record per key is the state.
        topics.append(
            _Wanted("state", config.state_topic, "at_least", {"cleanup.policy": "compact"})
        )
    return topics


async def create_topics(
    config: ServiceConfig, partitions: int, replication_factor: int | None
) -> int:
    """Create the missing topics; report the existing ones; 1 when any is wrong or failed."""
    admin = AIOKafkaAdminClient(**config.kafka)
    await admin.start()
    try:
        wanted = _wanted(config)
        counts = await count_partitions(admin, [w.name for w in wanted])
        brokers = len((await admin.describe_cluster()).get("brokers", ()))
        # Three copies where the cluster has them; one broker (a laptop) gets one.
        replicas = replication_factor or max(1, min(_MAX_REPLICAS, brokers))
        if replicas > brokers:
            print(f"error: --replication-factor {replicas}: the cluster has {brokers} broker(s)")
            return 1
        # By name: two settings may name one topic, and Kafka refuses a request naming it twice.
        missing = list({w.name: w for w in wanted if counts[w.name] is None}.values())
        failures: dict[str, str] = {}
        if missing:
            new = [
                NewTopic(
                    name=w.name,
                    num_partitions=partitions,
                    replication_factor=replicas,
                    topic_configs=dict(w.configs),
                )
                for w in missing
            ]
            response = await admin.create_topics(new)
            for name, code, *rest in getattr(response, "topic_errors", ()):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    failures[name] = f"error {code} {rest[0] if rest else ''}".strip()
    finally:
        with contextlib.suppress(KafkaError):
            await admin.close()
    failed = False
    for w in wanted:
        line = _create_line(w, counts[w.name], partitions, replicas, failures.get(w.name))
        failed |= line.startswith("error:")
        print(line, flush=True)
    return 1 if failed else 0


def _create_line(
    w: _Wanted, count: int | None, partitions: int, replicas: int, failure: str | None
) -> str:
    what = f"{w.role} topic {w.name}"
    if failure is not None:
        return f"error: {what}: cannot be created ({failure})"
    if count is None:
        extra = "".join(f", {k}={v}" for k, v in w.configs.items())
        return f"ok: {what}: created, {partitions} partitions, replication factor {replicas}{extra}"
    if (w.rule == "exact" and count != partitions) or (w.rule == "at_least" and count < partitions):
        need = "" if w.rule == "exact" else "at least "
        return (
            f"error: {what}: exists with {count} partitions, {need}{partitions} wanted: the"
            " service co-partitions the input, outcomes and state topics; pass --partitions"
            f" {count} if that is the deployment's width (adding partitions later moves keys)"
        )
    return f"ok: {what}: exists, {count} partitions"


async def _counts(config: ServiceConfig, topics: Iterable[str]) -> dict[str, int | None]:
    admin = AIOKafkaAdminClient(**config.kafka)
    await admin.start()
    try:
        return await count_partitions(admin, topics)
    finally:
        with contextlib.suppress(KafkaError):
            await admin.close()


async def _partitions_or_report(config: ServiceConfig, topics: Sequence[str]) -> dict[str, int]:
    """The partition counts of existing topics; an error line for each missing one."""
    counts = await _counts(config, topics)
    for topic, count in counts.items():
        if count is None:
            print(f"error: topic {topic} does not exist (`promo-bridge topics create` makes it)")
    return {topic: count for topic, count in counts.items() if count is not None}


async def produce(config: ServiceConfig, events: Sequence[fmt.FileEvent]) -> int:
    """Send the events, each acknowledged by every in-sync replica; one summary line."""
    topics = sorted({e.topic for e in events})
    existing = await _partitions_or_report(config, topics)
    if len(existing) < len(topics):
        print("error: nothing sent")
        return 1
    sent = await send(
        {**config.kafka, **config.producer},
        (OutgoingRecord(e.topic, e.key, e.value) for e in events),
    )
    by_topic = sorted(Counter(e.topic for e in events).items())
    print(f"sent {sent} event(s): {fmt.plural_counts(by_topic)}", flush=True)
    return 0


async def tail(
    config: ServiceConfig,
    which: Literal["outcomes", "dlq"],
    *,
    from_beginning: bool,
    as_json: bool,
    max_records: int | None,
    idle_timeout_s: float,
) -> int:
    """Print the topic's records: JSON lines as they come, or a table once the tail stops."""
    topic = config.outcomes_topic if which == "outcomes" else config.dlq_topic
    counts = await _partitions_or_report(config, [topic])
    if topic not in counts:
        return 1
    partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
    seen: list[fmt.Record] = []
    records = follow(
        _reader_options(config),
        partitions,
        from_beginning=from_beginning,
        max_records=max_records,
        idle_timeout_s=idle_timeout_s,
    )
    async with contextlib.aclosing(records):
        async for record in records:
            if as_json:
                print(fmt.json_line(record), flush=True)
            else:
                seen.append(record)
    if not as_json:
        table = fmt.outcomes_table if which == "outcomes" else fmt.dead_letters_table
        print(table(seen) if seen else f"no records on {topic}", flush=True)
    return 0


async def replay_dead_letters(
    config: ServiceConfig, offsets: set[tuple[int, int]] | None, *, dry_run: bool
) -> int:
    """Send the selected DLQ records (None: all) back where they came from, byte for byte."""
    topic = config.dlq_topic
    counts = await _partitions_or_report(config, [topic])
    if topic not in counts:
        return 1
    partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
    records = await read_to_end(_reader_options(config), partitions)
    chosen = [r for r in records if offsets is None or (r.partition, r.offset) in offsets]
    failed = False
    for partition, offset in sorted((offsets or set()) - {(r.partition, r.offset) for r in chosen}):
        print(f"error: DLQ {partition}:{offset}: no such record on {topic}")
        failed = True
    originals: list[tuple[str, fmt.Original]] = []
    for record in chosen:
        dead = fmt.decode_dead_letter(record.value)
        original = (
            fmt.original_of(dead) if not isinstance(dead, str) else f"not a DLQ record: {dead}"
        )
        if isinstance(original, str):
            print(f"skipped: DLQ {fmt.where(record)}: {original}")
            failed = True
        else:
            originals.append((fmt.where(record), original))
    originals, failed = await _drop_unknown_targets(config, originals, failed)
    if not dry_run and originals:
        await send(
            {**config.kafka, **config.producer},
            (
                OutgoingRecord(o.topic, o.key, o.value, o.headers, partition=o.partition)
                for _, o in originals
            ),
        )
    verb = "would replay" if dry_run else "replayed"
    for at, original in originals:
        print(f"{verb}: DLQ {at} -> {original.describe()}", flush=True)
    return 1 if failed else 0


async def _drop_unknown_targets(
    config: ServiceConfig, originals: list[tuple[str, fmt.Original]], failed: bool
) -> tuple[list[tuple[str, fmt.Original]], bool]:
    """Keep the records whose source partition still exists (a topic may have been remade)."""
    if not originals:
        return originals, failed
    counts = await _counts(config, {o.topic for _, o in originals})
    kept = []
    for at, original in originals:
        count = counts.get(original.topic)
        if count is None or original.partition >= count:
            print(f"skipped: DLQ {at}: {original.topic}:{original.partition} does not exist")
            failed = True
        else:
            kept.append((at, original))
    return kept, failed


def _reader_options(config: ServiceConfig) -> dict[str, Any]:
    # The service's connection (TLS, SASL) and fetch limits; never its group.
    options = dict(config.kafka)
    options["max_partition_fetch_bytes"] = config.consumer["max_partition_fetch_bytes"]
    options["fetch_max_bytes"] = config.consumer["fetch_max_bytes"]
    return options
