"""`topics create`, `produce`, `tail` and `dlq replay`: running against one's own Kafka.

Every command reads the same PROMO_BRIDGE_* variables as `run` (broker, TLS, SASL, topic
names), so what it creates, writes or reads is what the service will use. Exit 0 when all went
as asked, 1 when a topic or a record was wrong, 2 when the settings are invalid.
"""

# The Kafka side (_cli_topics_kafka.py) is imported inside the commands, so that the other
# commands start fast and never load aiokafka.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from promo_bridge.bootstrap import ServiceConfig

# Six partitions serve 1, 2, 3 or 6 service instances evenly, and the width cannot be raised
# later without moving customers' keys to other partitions (and so away from their ledger).
DEFAULT_PARTITIONS = 6
DEFAULT_TAIL_TIMEOUT_S = 5.0

# A string: argparse's class is generic only to the type checker.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(subparsers: Subparsers) -> None:
    """Register `topics`, `produce`, `tail` and `dlq` on the main parser's subparsers."""
    _register_topics(subparsers)
    _register_produce(subparsers)
    _register_tail(subparsers)
    _register_dlq(subparsers)


def _register_topics(subparsers: Subparsers) -> None:
    topics = subparsers.add_parser("topics", help="create the topics the service needs")
    actions = topics.add_subparsers(dest="topics_command", required=True)
    create = actions.add_parser(
        "create",
        help="create the missing input, outcomes, DLQ and state topics; check the others",
        description="Create every topic the settings name that does not exist (the state topic"
        " compacted) and report those that do: one line per topic; exit 1 when one has the"
        " wrong partition count or cannot be created.",
    )
    create.add_argument(
        "--partitions",
        type=_positive,
        default=DEFAULT_PARTITIONS,
        help=f"partitions of each new topic (default {DEFAULT_PARTITIONS}: 1, 2, 3 or 6"
        " instances share them evenly; existing input topics must have exactly this many)",
    )
    create.add_argument(
        "--replication-factor",
        type=_positive,
        default=None,
        help="copies of each new topic (default: 3, or the number of brokers if fewer)",
    )
    create.set_defaults(func=run_topics_create)


def _register_produce(subparsers: Subparsers) -> None:
    produce = subparsers.add_parser(
        "produce",
        help="send a JSON-lines file of CloudEvents, keyed by customer",
        description="Send each line of FILE as one record, its bytes unchanged, keyed by"
        " data.customer id, else mobile, else email (else the subject or id), acknowledged by"
        " every in-sync replica. The whole file is read first: a line that is not a JSON"
        " object is an error naming it, and then nothing is sent.",
    )
    produce.add_argument("file", type=Path, help="CloudEvents, one JSON object per line")
    produce.add_argument("--topic", help="the topic of every event without a --topic-of-type")
    produce.add_argument(
        "--topic-of-type",
        type=_type_topic,
        action="append",
        default=[],
        metavar="TYPE=TOPIC",
        help="send events of this `type` to this topic (repeatable)",
    )
    produce.set_defaults(func=run_produce)


def _register_tail(subparsers: Subparsers) -> None:
    tail = subparsers.add_parser(
        "tail",
        help="print the outcomes or DLQ records, as a table or JSON lines",
        description="Read the outcomes or the DLQ topic (no consumer group: nothing is"
        " committed) until --max records or --timeout-s without a new one. JSON lines are"
        " printed as they arrive; the table once the tail stops.",
    )
    tail.add_argument("which", choices=("outcomes", "dlq"))
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record, not the end"
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per record")
    tail.add_argument("--max", type=_positive, default=None, help="stop after this many records")
    tail.add_argument(
        "--timeout-s",
        type=_non_negative_float,
        default=DEFAULT_TAIL_TIMEOUT_S,
        help=f"stop after this long without a new record (default {DEFAULT_TAIL_TIMEOUT_S:g})",
    )
    tail.set_defaults(func=run_tail)


def _register_dlq(subparsers: Subparsers) -> None:
    dlq = subparsers.add_parser("dlq", help="send dead letters back to their source topic")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    replay = actions.add_parser(
        "replay",
        help="send selected DLQ records back to their source topic, byte for byte",
        description="Send DLQ records back to the topic and partition they came from, with"
        " their original key, value and headers. A record whose value was cut in the DLQ"
        " (value_truncated) cannot be replayed and is skipped. One line per record; exit 1"
        " when any selected record was not sent.",
    )
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--offset",
        type=parse_offset,
        action="append",
        metavar="P:O",
        help="the DLQ record at partition P, offset O, as `tail dlq` shows it (repeatable)",
    )
    chosen.add_argument("--all", action="store_true", help="every record on the DLQ topic")
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent; send none")
    replay.set_defaults(func=run_dlq_replay)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _type_topic(text: str) -> tuple[str, str]:
    kind, equals, topic = text.partition("=")
    if not (kind and equals and topic):
        raise argparse.ArgumentTypeError(
            f"expected TYPE=TOPIC, such as order.placed=orders: {text!r}"
        )
    return kind, topic


def parse_offset(text: str) -> tuple[int, int]:
    """`P:O` -> (partition, offset)."""
    partition, colon, offset = text.partition(":")
    if not (colon and partition.isdigit() and offset.isdigit()):
        raise argparse.ArgumentTypeError(f"expected PARTITION:OFFSET, such as 0:42: {text!r}")
    return int(partition), int(offset)


def run_topics_create(args: argparse.Namespace) -> int:
    """`topics create`."""
    from promo_bridge._cli_topics_kafka import create_topics

    return _run(lambda config: create_topics(config, args.partitions, args.replication_factor))


def run_produce(args: argparse.Namespace) -> int:
    """`produce FILE --topic T | --topic-of-type TYPE=TOPIC ...`."""
    from promo_bridge._cli_topics_format import LineError, read_events
    from promo_bridge._cli_topics_kafka import produce

    if args.topic is None and not args.topic_of_type:
        print("promo-bridge produce: give --topic or --topic-of-type", file=sys.stderr)
        return 2
    try:
        text = args.file.read_text(encoding="utf-8")
        events = read_events(text, dict(args.topic_of_type), args.topic)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: {args.file}: cannot read: {exc}", file=sys.stderr)
        return 1
    except LineError as exc:
        print(f"error: {args.file}: {exc}; nothing sent", file=sys.stderr)
        return 1
    return _run(lambda config: produce(config, events))


def run_tail(args: argparse.Namespace) -> int:
    """`tail outcomes|dlq`."""
    from promo_bridge._cli_topics_kafka import tail

    return _run(
        lambda config: tail(
            config,
            args.which,
            from_beginning=args.from_beginning,
            as_json=args.json,
            max_records=args.max,
            idle_timeout_s=args.timeout_s,
        )
    )


def run_dlq_replay(args: argparse.Namespace) -> int:
    """`dlq replay --offset P:O ... | --all`."""
    from promo_bridge._cli_topics_kafka import replay_dead_letters

    offsets = None if args.all else set(args.offset)
    return _run(lambda config: replay_dead_letters(config, offsets, dry_run=args.dry_run))


def _run(command: Callable[[ServiceConfig], Coroutine[Any, Any, int]]) -> int:
    """Load the settings, then run `command(config)`; a broker that cannot be reached is exit 1."""
    from aiokafka.errors import KafkaError

    from promo_bridge.bootstrap import configure
    from promo_bridge.observability.logging import configure_logging
    from promo_bridge.settings import SettingsError, load_settings

    # The lines printed say what happened; the libraries' own logs would only repeat them.
    configure_logging("CRITICAL", "console")
    try:
        config = configure(load_settings())
    except SettingsError as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(command(config))
    except (KafkaError, OSError, TimeoutError) as exc:
        servers = config.kafka["bootstrap_servers"]
        print(f"error: Kafka at {servers}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
