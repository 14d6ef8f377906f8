"""bench_e2e's baseline: a bare aiokafka loop, run as a process of its own until SIGTERM.

Fetch, decode each value as JSON, produce one small JSON record per event to the output topic,
wait for the acknowledgements, commit. No rules, no API, no bookkeeping: what any Python
consumer pays for Kafka and JSON alone. The consumer and producer take the service's own
Kafka settings, so the difference to the service is the service's work, not a setting.

`--writes service` is the floor under the service instead: per event the three records the
service must have acknowledged for each command (the intent before the call, the outcome, the
holding after it), each stage batched per partition and acknowledged before the next, as the
service's publisher does, then the commit. Still no rules, no API and no bookkeeping: what this
Kafka client charges for the service's obligations alone.

Run: .venv/bin/python bench/e2e_bare_loop.py --bootstrap HOST:PORT --input T --output T --group G
     [--loop uvloop]   (asyncio's own event loop unless told; the service runs on uvloop's)
     [--writes service]   (three records an event, batched, in three acknowledged stages)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from promo_bridge.kafka.producer import producer_options

# The service's default max_poll_records: one fetch's worth of work is the same on both sides.
MAX_POLL_RECORDS = 500
FETCH_TIMEOUT_MS = 200
# bench_e2e starts its clock when it sees this line (the service logs service_started).
BARE_LOOP_STARTED = "bare_loop_started"


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Copy input events to the output topic, one record each, until `stop` is set."""
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_POLL_RECORDS,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, **producer_options(idempotence=True)
    )
    await consumer.start()
    await producer.start()
    print(BARE_LOOP_STARTED, flush=True)
    copy = _copy_like_service if args.writes == "service" else _copy_one_each
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            messages = [message for batch in fetched.values() for message in batch]
            if messages:
                # Commit only what is on the output topic: the same promise the service keeps.
                await copy(producer, args.output, messages)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


async def _copy_one_each(
    producer: AIOKafkaProducer, topic: str, messages: list[ConsumerRecord[Any, Any]]
) -> None:
    sends = []
    for message in messages:
        event = json.loads(message.value)
        out = {"event_id": event["id"], "offset": message.offset, "status": "OK"}
        sends.append(await producer.send(topic, json.dumps(out).encode(), message.key))
    await asyncio.gather(*sends)


async def _copy_like_service(
    producer: AIOKafkaProducer, topic: str, messages: list[ConsumerRecord[Any, Any]]
) -> None:
    events = [(message, json.loads(message.value)) for message in messages]
    for stage in ("intent", "outcome", "holding"):
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for message, event in events:
            out = {"event_id": event["id"], "offset": message.offset, "stage": stage}
            by_partition.setdefault(message.partition, []).append(
                (message.key, json.dumps(out).encode())
            )
        futures = []
        for partition, records in by_partition.items():
            builder = producer.create_batch()
            for key, value in records:
                if builder.append(timestamp=None, key=key, value=value) is None:
                    builder.close()
                    futures.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = producer.create_batch()
                    builder.append(timestamp=None, key=key, value=value)
            builder.close()
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*futures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--bootstrap", "--input", "--output", "--group"):
        parser.add_argument(name, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--writes", choices=("one", "service"), default="one")
    args = parser.parse_args()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    loop_factory = None
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only this variant needs it

        loop_factory = uvloop.new_event_loop
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(serve())


if __name__ == "__main__":
    main()
