"""DLQ records: the original kept byte for byte, cut with its length and hash when too long."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from promo_bridge.domain.dead_letters import VALUE_LIMIT_BYTES, DeadLetterRecord, dead_letter

AT = datetime(2026, 11, 29, tzinfo=UTC)


def letter_for(value: bytes) -> DeadLetterRecord:
    return dead_letter(
        reason="Invalid JSON",
        topic="orders",
        partition=3,
        offset=42,
        timestamp_ms=1,
        key=b"k",
        value=value,
        headers=[("trace", b"t")],
        failed_at=AT,
    )


def test_a_small_value_is_kept_whole_with_its_text_length_and_hash() -> None:
    """Up to the limit the value travels whole, as base64 and as text."""
    value = b'{"broken": '
    letter = letter_for(value)
    assert base64.b64decode(letter.value_b64 or "") == value
    assert letter.value_text == value.decode()
    assert (letter.value_size, letter.value_truncated) == (len(value), False)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()


def test_a_value_over_the_limit_is_cut_and_the_record_fits_a_1_mib_topic() -> None:
    """A 1 MB original keeps its first 256 KiB, no text, its length and SHA-256, its position."""
    value = b"x" * 1_000_000
    letter = letter_for(value)
    assert base64.b64decode(letter.value_b64 or "") == value[:VALUE_LIMIT_BYTES]
    assert letter.value_text is None
    assert letter.value_truncated is True
    assert letter.value_size == 1_000_000
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("orders", 3, 42)
    assert len(letter.model_dump_json().encode()) < 1_000_000


def test_the_worst_case_kept_whole_still_fits() -> None:
    """A value just at the limit, base64 plus text, stays under the broker's 1 MiB default."""
    letter = letter_for(b"y" * VALUE_LIMIT_BYTES)
    assert letter.value_truncated is False
    assert len(letter.model_dump_json().encode()) < 1_048_576


def test_a_text_of_control_characters_is_left_out_so_the_record_stays_small() -> None:
    """200 KB of control characters: base64 only, no text (JSON would escape each to 6 bytes)."""
    value = bytes(range(1, 32)) * (200_000 // 31)
    letter = dead_letter(
        reason="not JSON",
        topic="t",
        partition=0,
        offset=1,
        timestamp_ms=None,
        key=None,
        value=value,
        headers=[],
        failed_at=datetime(2026, 11, 29, tzinfo=UTC),
    )
    assert letter.value_text is None
    assert not letter.value_truncated
    assert len(letter.model_dump_json()) < 2 * len(value)
