"""bench_e2e's baseline: a bare aiokafka loop, run as a process of its own until SIGTERM.

Fetch, decode each value as JSON, produce one small JSON record per event to the output topic,
wait for the acknowledgements, commit. No rules, no API, no bookkeeping: what any Python
consumer pays for Kafka and JSON alone. The consumer and producer take the service's own
Kafka settings, so the difference to the service is the service's work, not a setting.

`--writes service` is the floor under the service instead: what the service must have
acknowledged for a backlog of enrolments, written the way its publisher writes it. Per 100
events (a bulk request) one intent group record per partition, naming its events; then one
outcome record of the service's size (about 735 bytes) per event; then a tombstone per intent
group; each stage batched per partition and acknowledged before the next, then the commit.
Still no rules, no API and no bookkeeping: what this Kafka client charges for the service's
obligations alone.

Run: .venv/bin/python bench/e2e_bare_loop.py --bootstrap HOST:PORT --input T --output T --group G
     [--loop uvloop]   (asyncio's own event loop unless told; the service runs on uvloop's)
     [--writes service]   (intent groups, outcomes, tombstones, as the service writes them)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from promo_bridge.kafka.producer import _queue_batches, _Record, producer_options

# The service's default max_poll_records: one fetch's worth of work is the same on both sides.
MAX_POLL_RECORDS = 500
FETCH_TIMEOUT_MS = 200
# Customers per bulk request: the service's default, the API's documented maximum.
REQUEST_SIZE = 100
# An outcome record as the service writes one for an applied enrolment: about 735 bytes.
_OUTCOME_HEAD = b'{"event_id":"'
_OUTCOME_TAIL = b'","status":"applied","pad":"' + b"x" * 670 + b'"}'
# bench_e2e starts its clock when it sees this line (the service logs service_started).
BARE_LOOP_STARTED = "bare_loop_started"


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Write the output for every fetch (one record an event, or the service's writes), until
    `stop` is set."""
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
    # Bulk calls take up to REQUEST_SIZE commands; the service writes one intent group per
    # request and partition before the call, and closes it with a tombstone after.
    groups: list[_Record] = []
    outcomes: list[_Record] = []
    for start in range(0, len(messages), REQUEST_SIZE):
        members: dict[int, dict[str, list[str]]] = {}
        for message in messages[start : start + REQUEST_SIZE]:
            event_id = json.loads(message.value)["id"]
            members.setdefault(message.partition, {})[event_id] = ["enrol", event_id]
            outcome = _OUTCOME_HEAD + event_id.encode() + _OUTCOME_TAIL
            outcomes.append((message.key, outcome, [], message.partition))
        for partition, group in members.items():
            key = f"intents|{uuid.uuid4()}".encode()
            groups.append((key, json.dumps({"t": 0, "c": group}).encode(), [], partition))
    tombstones: list[_Record] = [(key, None, [], p) for key, _, _, p in groups]
    for stage in (groups, outcomes, tombstones):
        # The service's publisher's own batching: a batch per partition, more where one fills.
        futures: list[tuple[asyncio.Future[Any], int]] = []
        await _queue_batches(producer, topic, stage, futures)
        await asyncio.gather(*(future for future, _ in futures))


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
