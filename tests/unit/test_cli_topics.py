"""`topics create`, `produce`, `tail`, `dlq replay`: their arguments, the file, what they print."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_support import run

from promo_bridge._cli_topics import DEFAULT_PARTITIONS, DEFAULT_TAIL_TIMEOUT_S
from promo_bridge._cli_topics_format import (
    LineError,
    Original,
    dead_letters_table,
    decode_dead_letter,
    json_line,
    original_of,
    outcomes_table,
    read_events,
)
from promo_bridge.cli import build_parser
from promo_bridge.domain.dead_letters import VALUE_LIMIT_BYTES, DeadLetterRecord, dead_letter
from promo_bridge.domain.keys import customer_key, record_key

AT = datetime(2026, 11, 29, tzinfo=UTC)


@dataclass(frozen=True)
class Rec:
    """A record read back, as the printers see it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


def letter(value: bytes, headers: list[tuple[str, bytes | None]] | None = None) -> DeadLetterRecord:
    return dead_letter(
        reason="Invalid JSON: EOF",
        topic="orders",
        partition=3,
        offset=42,
        timestamp_ms=1,
        key=b"c-1",
        value=value,
        headers=headers or [],
        failed_at=AT,
    )


def test_defaults_are_six_partitions_the_clusters_replication_and_a_five_second_tail() -> None:
    """`topics create` and `tail` without options: 6 partitions, replication chosen, 5 s idle."""
    create = build_parser().parse_args(["topics", "create"])
    tail = build_parser().parse_args(["tail", "outcomes"])
    assert (create.partitions, create.replication_factor) == (DEFAULT_PARTITIONS, None) == (6, None)
    assert (tail.which, tail.from_beginning, tail.json, tail.max) == (
        "outcomes",
        False,
        False,
        None,
    )
    assert tail.timeout_s == DEFAULT_TAIL_TIMEOUT_S


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "replay"],
        ["dlq", "replay", "--all", "--offset", "0:1"],
        ["dlq", "replay", "--offset", "0"],
        ["dlq", "replay", "--offset", "a:1"],
        ["topics", "create", "--partitions", "0"],
        ["tail", "orders"],
        ["tail", "dlq", "--timeout-s", "-1"],
        ["produce", "f.jsonl", "--topic-of-type", "order.placed"],
    ],
)
def test_bad_arguments_are_refused_by_the_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No selection, both, a malformed P:O, zero partitions, an unknown topic: usage, exit 2."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_offsets_are_collected_as_partition_offset_pairs() -> None:
    """`--offset 0:3 --offset 1:40` selects exactly those two DLQ records."""
    args = build_parser().parse_args(["dlq", "replay", "--offset", "0:3", "--offset", "1:40"])
    assert (args.offset, args.all, args.dry_run) == ([(0, 3), (1, 40)], False, False)


def test_a_line_that_is_not_json_names_its_number_and_nothing_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file is read whole before any send: line 2 is named, exit 1, no broker contacted."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "order.placed", "id": "e1"}\n{"type": \n')
    code = run("produce", events, "--topic", "orders")
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"error: {events}: line 2: not JSON (Expecting value at column 10); nothing sent\n"
    )


def test_events_are_keyed_by_customer_and_sent_as_written() -> None:
    """Key: id, else mobile, else email, else subject; topic by type, else --topic; bytes kept."""
    lines = [
        '{"type": "order.placed", "data": {"customer": {"id": 7, "mobile": "9"}}}',
        "",
        '{"type": "return.created",  "data": {"customer": {"mobile": "91"}}}',
        '{"type": "x", "subject": "s-1", "data": {"customer": {"email": ""}}}',
    ]
    events = read_events("\n".join(lines), {"return.created": "returns"}, "orders")
    assert [(e.line, e.topic, e.key) for e in events] == [
        (1, "orders", b"7"),
        (3, "returns", b"91"),
        (4, "orders", b"s-1"),
    ]
    assert events[1].value == lines[2].encode()


def test_an_event_without_a_topic_or_not_an_object_is_refused() -> None:
    """No --topic for its type, or a JSON array: a LineError naming the line."""
    with pytest.raises(LineError, match=r"line 1: no topic for event type 'order.placed'"):
        read_events('{"type": "order.placed"}', {}, None)
    with pytest.raises(LineError, match="line 2: not a JSON object"):
        read_events('{"type": "a"}\n[1]', {}, "orders")


def test_customer_key_is_none_without_a_customer_and_record_key_falls_back() -> None:
    """customer_key: no customer, no key; record_key: the subject, else the id."""
    assert customer_key({"data": "not an object"}) is None
    assert customer_key({"data": {"customer": {"email": "a@b"}}}) == b"a@b"
    assert record_key({"id": "e-1", "data": {}}) == b"e-1"


def test_outcomes_print_their_ids_when_applied_and_their_error_otherwise() -> None:
    """The table: one row per outcome, issualId for applied, code and class for rejected."""
    base = {
        "event_id": "e1",
        "rule": "r",
        "action": "enrol",
        "subject": "big",
        "identifier_name": "id",
        "identifier_value": "7",
    }
    applied = base | {"status": "applied", "issual_id": "iss-1"}
    rejected = base | {
        "status": "rejected",
        "error_code": 8015,
        "error_class": "rejected",
        "error_message": "Customer not found",
    }
    records = [
        Rec(0, 5, b"7", json.dumps(applied).encode()),
        Rec(1, 6, b"7", json.dumps(rejected).encode()),
    ]
    header, first, second = outcomes_table(records).splitlines()
    assert header.split()[:7] == ["at", "event", "rule", "action", "subject", "customer", "status"]
    assert first.split() == ["0:5", "e1", "r", "enrol", "big", "id:7", "applied", "issualId=iss-1"]
    assert second.endswith("8015 rejected Customer not found")


def test_dead_letters_print_their_source_size_and_reason_and_mark_a_cut_value() -> None:
    """The DLQ table: where, topic:partition:offset, bytes (cut), failed_at, reason."""
    small = letter(b'{"id": ').model_dump_json().encode()
    cut = letter(b"x" * (VALUE_LIMIT_BYTES + 1)).model_dump_json().encode()
    table = dead_letters_table(
        [Rec(0, 1, b"c-1", small), Rec(0, 2, b"c-1", cut), Rec(0, 3, None, b"{}")]
    )
    _, first, second, third = table.splitlines()
    assert first.split()[:4] == ["0:1", "orders:3:42", "7", "2026-11-29T00:00:00+00:00"]
    assert first.endswith("Invalid JSON: EOF")
    assert f"{VALUE_LIMIT_BYTES + 1} (cut)" in second
    assert "not a DLQ record: reason: Field required" in third


def test_a_dead_letter_gives_back_its_original_key_value_and_headers() -> None:
    """Base64 decoded: the same key, value and headers (a null header value stays null)."""
    dead = letter(b"\x00\xffbinary", [("trace", b"\x01"), ("empty", None)])
    assert original_of(dead) == Original(
        "orders", 3, b"c-1", b"\x00\xffbinary", (("trace", b"\x01"), ("empty", None))
    )


def test_a_cut_dead_letter_cannot_be_replayed_and_says_where_the_original_was() -> None:
    """value_truncated: a reason naming the size and the source record, no original."""
    dead = letter(b"x" * (VALUE_LIMIT_BYTES + 1))
    reason = original_of(dead)
    assert isinstance(reason, str)
    assert f"of {VALUE_LIMIT_BYTES + 1} bytes" in reason
    assert "orders:3:42" in reason


def test_a_record_that_is_not_a_dead_letter_is_named_not_decoded() -> None:
    """A value that is not a DLQ record: the first problem, not an exception."""
    problem = decode_dead_letter(b"not json")
    assert isinstance(problem, str)
    assert problem.startswith("Invalid JSON")


def test_json_lines_carry_the_place_the_key_and_the_parsed_value() -> None:
    """`--json`: partition, offset, timestamp, key as text, value parsed (or as text)."""
    assert json.loads(json_line(Rec(1, 2, b"k", b'{"a": 1}', 99))) == {
        "partition": 1,
        "offset": 2,
        "timestamp_ms": 99,
        "key": "k",
        "value": {"a": 1},
    }
    assert json.loads(json_line(Rec(0, 0, None, b"plain")))["value"] == "plain"
