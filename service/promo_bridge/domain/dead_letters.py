"""The DLQ record: an input event that could not be decoded, kept whole with the reason."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field


class DeadLetterHeader(BaseModel):
    """One Kafka header of the original record; values are bytes, so they travel as base64."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    value_b64: str | None


class DeadLetterRecord(BaseModel):
    """Published on the DLQ topic, keyed like the original, for each undecodable event.

    The original key and value are carried byte for byte (base64) so a fixed event can be
    replayed exactly; `value_text` repeats the value as text when it is valid UTF-8 and not
    mostly characters JSON must escape, for people.
    A value longer than 256 KiB is cut to its first 256 KiB (no text), with its length and
    SHA-256, so that the record always fits the topic.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str = Field(description="Why the event was refused: the field and what is wrong.")
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int | None = None
    key_b64: str | None = None
    value_b64: str | None = None
    value_text: str | None = None
    value_size: int | None = Field(
        default=None, description="Length of the original value in bytes (before any cut)."
    )
    value_sha256: str | None = Field(
        default=None, description="SHA-256 (hex) of the whole original value."
    )
    value_truncated: bool = Field(
        default=False,
        description="The original value was longer than 262144 bytes (256 KiB): value_b64"
        " holds its first 262144 bytes and value_text is left out.",
    )
    headers: list[DeadLetterHeader] = Field(default_factory=list)
    failed_at: datetime


# A DLQ record carries the value as base64 and again as text: kept whole up to this size, the
# record stays well inside the broker's default 1 MiB message limit.
VALUE_LIMIT_BYTES: Final = 256 * 1024


def dead_letter(
    *,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
    failed_at: datetime,
) -> DeadLetterRecord:
    """Build the DLQ record for one refused input record; a long value is cut (see the fields)."""
    text: str | None = None
    truncated = value is not None and len(value) > VALUE_LIMIT_BYTES
    kept = value[:VALUE_LIMIT_BYTES] if value is not None and truncated else value
    if kept is not None and not truncated:
        try:
            text = kept.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and len(json.dumps(text, ensure_ascii=False)) > 2 * len(kept):
            # Control characters become six bytes each (\u0001) in JSON: such a text would
            # carry the value several times over and could outgrow the topic's limit.
            text = None
    return DeadLetterRecord(
        reason=reason,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_timestamp_ms=timestamp_ms,
        key_b64=_b64(key),
        value_b64=_b64(kept),
        value_text=text,
        value_size=None if value is None else len(value),
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        value_truncated=truncated,
        headers=[DeadLetterHeader(key=k, value_b64=_b64(v)) for k, v in headers],
        failed_at=failed_at,
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
