"""What `produce`, `tail` and `dlq replay` read and print; no Kafka here (see _cli_topics.py).

A line of a JSON-lines file becomes an event, a record becomes a table row or a JSON line, and
a DLQ record becomes the original record again.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from promo_bridge._cli_replay import columns
from promo_bridge._cli_rules import plural
from promo_bridge.domain.dead_letters import DeadLetterRecord
from promo_bridge.domain.keys import record_key


class LineError(Exception):
    """A line of an events file that cannot be sent; the message names the line."""


class Record(Protocol):
    """What is printed of a record read back (kafka/records.py's ReadRecord)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp_ms(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One line of an events file, as it will be sent."""

    line: int
    topic: str
    key: bytes
    # The line itself, not a re-encoding: what the file says is what the service reads.
    value: bytes


def read_events(
    text: str, topic_of_type: Mapping[str, str], default_topic: str | None
) -> list[FileEvent]:
    """Every non-blank line as an event keyed by customer; LineError at the first bad line."""
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LineError(f"line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(event, dict):
            raise LineError(f"line {number}: not a JSON object (a CloudEvent is one)")
        kind = event.get("type")
        topic = topic_of_type.get(kind, default_topic) if isinstance(kind, str) else default_topic
        if topic is None:
            raise LineError(
                f"line {number}: no topic for event type {kind!r}: add --topic-of-type"
                f" {kind}=TOPIC or --topic"
            )
        events.append(FileEvent(number, topic, record_key(event), line.encode()))
    return events


def where(record: Record) -> str:
    """`partition:offset`, as `dlq replay --offset` takes it."""
    return f"{record.partition}:{record.offset}"


def json_line(record: Record) -> str:
    """One record as a JSON line: where it is, its key as text, its value parsed."""
    value: Any = None
    if record.value is not None:
        try:
            value = json.loads(record.value)
        except ValueError:
            value = record.value.decode("utf-8", "replace")
    key = None if record.key is None else record.key.decode("utf-8", "replace")
    return json.dumps(
        {
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp_ms,
            "key": key,
            "value": value,
        },
        ensure_ascii=False,
    )


def _parsed(record: Record) -> dict[str, Any]:
    try:
        value = json.loads(record.value or b"null")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def outcomes_table(records: Sequence[Record]) -> str:
    """Outcome records as aligned columns, with the ids for applied ones and errors otherwise."""
    header = ("at", "event", "rule", "action", "subject", "customer", "status", "ids / error")
    return "\n".join(columns([header, *(_outcome_row(r) for r in records)]))


def _outcome_row(record: Record) -> tuple[str, ...]:
    o = _parsed(record)
    if o.get("status") in ("applied", "already_applied"):
        named = (
            ("issualId", "issual_id"),
            ("earnedId", "earned_id"),
            ("revokedIssualId", "revoked_issual_id"),
            ("revokedEarnIds", "revoked_earn_ids"),
        )
        detail = " ".join(f"{name}={o[key]}" for name, key in named if o.get(key))
    elif o.get("status") == "skipped":
        detail = str(o.get("skip_reason") or "")
    else:
        parts = (o.get("error_code"), o.get("error_class"), o.get("error_message"))
        detail = " ".join(str(p) for p in parts if p is not None)
    customer = f"{o.get('identifier_name', '?')}:{o.get('identifier_value', '?')}"
    cells = (o.get(name, "?") for name in ("event_id", "rule", "action", "subject"))
    return (where(record), *map(str, cells), customer, str(o.get("status", "?")), detail)


def dead_letters_table(records: Sequence[Record]) -> str:
    """DLQ records as aligned columns: where, where from, size, and the reason."""
    header = ("at", "source", "bytes", "failed_at", "reason")
    rows: list[tuple[str, ...]] = [header]
    for record in records:
        dead = decode_dead_letter(record.value)
        if isinstance(dead, str):
            rows.append((where(record), "?", "?", "?", f"not a DLQ record: {dead}"))
            continue
        size = "?" if dead.value_size is None else str(dead.value_size)
        rows.append(
            (
                where(record),
                f"{dead.source_topic}:{dead.source_partition}:{dead.source_offset}",
                size + (" (cut)" if dead.value_truncated else ""),
                dead.failed_at.isoformat(timespec="seconds"),
                dead.reason,
            )
        )
    return "\n".join(columns(rows))


def decode_dead_letter(value: bytes | None) -> DeadLetterRecord | str:
    """The DLQ record, or why the value is not one."""
    try:
        return DeadLetterRecord.model_validate_json(value or b"")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        place = ".".join(map(str, first["loc"]))
        return f"{place}: {first['msg']}" if place else str(first["msg"])


@dataclass(frozen=True, slots=True)
class Original:
    """The record a dead letter was made of, byte for byte."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]

    def describe(self) -> str:
        """`topic:partition, key ..., N bytes, M headers`, for the replay's line."""
        key = "no key" if self.key is None else f"key {self.key.decode('utf-8', 'replace')}"
        size = "no value" if self.value is None else f"{len(self.value)} bytes"
        headers = plural(len(self.headers), "header")
        return f"{self.topic}:{self.partition} ({key}, {size}, {headers})"


def original_of(dead: DeadLetterRecord) -> Original | str:
    """The original record, or why it cannot be rebuilt (a cut value, bad base64)."""
    if dead.value_truncated:
        return (
            f"its value was cut to its first 256 KiB of {dead.value_size} bytes in the DLQ, so"
            f" the original is not there to replay (it was {dead.source_topic}:"
            f"{dead.source_partition}:{dead.source_offset})"
        )
    try:
        headers = tuple((h.key, _bytes(h.value_b64)) for h in dead.headers)
        return Original(
            dead.source_topic,
            dead.source_partition,
            _bytes(dead.key_b64),
            _bytes(dead.value_b64),
            headers,
        )
    except (binascii.Error, ValueError) as exc:
        return f"its base64 cannot be decoded ({exc})"


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def plural_counts(counts: Iterable[tuple[str, int]]) -> str:
    """`orders 3, returns 1`."""
    return ", ".join(f"{name} {count}" for name, count in counts)
