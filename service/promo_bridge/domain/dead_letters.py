"""The DLQ record: an input event that could not be decoded, kept whole with the reason."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DeadLetterHeader(BaseModel):
    """One Kafka header of the original record; values are bytes, so they travel as base64."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    value_b64: str | None


class DeadLetterRecord(BaseModel):
    """Published on the DLQ topic, keyed like the original, for each undecodable event.

    The original key and value are carried byte for byte (base64) so a fixed event can be
    replayed exactly; `value_text` repeats the value as text when it is valid UTF-8, for people.
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
    headers: list[DeadLetterHeader] = Field(default_factory=list)
    failed_at: datetime


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
    """Build the DLQ record for one refused input record."""
    text: str | None = None
    if value is not None:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return DeadLetterRecord(
        reason=reason,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_timestamp_ms=timestamp_ms,
        key_b64=_b64(key),
        value_b64=_b64(value),
        value_text=text,
        headers=[DeadLetterHeader(key=k, value_b64=_b64(v)) for k, v in headers],
        failed_at=failed_at,
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
