"""Outcomes: the result of one command, and the record published for it on the outcomes topic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, ClassVar, Final

import orjson
from pydantic import ConfigDict, Field, TypeAdapter

from promo_bridge.domain._values import value
from promo_bridge.domain.commands import Batch, Command


class OutcomeStatus(StrEnum):
    """What happened to one command."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    REJECTED = "rejected"
    # Reserved for a command that can never be sent (e.g. an ambiguous response that cannot be
    # split further). An API that is merely unavailable never produces it.
    FAILED = "failed"
    # Not sent, by the order ledger's decision (`skip_reason`): an earn for an order already
    # returned, a return whose order earned nothing or is unknown.
    SKIPPED = "skipped"


class ErrorClass(StrEnum):
    """The error classes of DESIGN.md; every Capillary code maps to exactly one."""

    RETRYABLE = "retryable"
    ALREADY_APPLIED = "already_applied"
    REJECTED = "rejected"
    CONFIG = "config"
    AUTH = "auth"
    # A call's answer was lost and the lookup could not tell whether it applied (never resent).
    UNVERIFIED = "unverified"
    # The API kept failing for this command (not merely down) past the retry bound.
    RETRY_EXHAUSTED = "retry_exhausted"


@value
class CommandResult:
    """The client's verdict on one command of a batch, matched to it by position."""

    command_id: str
    status: OutcomeStatus
    error_class: ErrorClass | None = None
    error_code: int | None = None
    error_message: str | None = None
    issual_id: str | None = None
    earned_id: str | None = None
    revoked_earn_ids: tuple[int, ...] = ()
    revoked_issual_id: str | None = None
    attempts: int = 1
    request_id: str | None = None
    batch_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@value
class Delivery:
    """What sending one batch came to: the sender port's answer to the engine.

    `completed` holds final results (publish them); `pending` the commands without one (the API
    was unavailable or refused the credentials: keep them, send them later, publish nothing for
    them yet). A delivery with nothing pending is complete.
    """

    completed: tuple[CommandResult, ...] = ()
    pending: tuple[Command, ...] = ()
    # How long the API asked not to be called (Retry-After), if it asked.
    pause_s: float | None = None
    # The credentials were refused (also after a token refresh): pause until a call succeeds.
    auth_refused: bool = False
    # Requests that carried each pending command during this send, by command_id.
    attempts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Why commands are pending, for logs: codes and counts only, never credentials.
    detail: str = ""
    # Pending commands whose last call may have applied them (its answer was lost): verify
    # them with the lookup before sending them again.
    unsure: frozenset[str] = frozenset()
    # The API is merely down (connect errors, 429, 503 with Retry-After): pending commands wait
    # without using up their retry bound. False: it answered, but not usefully (a retryable
    # code that keeps coming, a 5xx, a timeout, an unreadable body): the bound counts.
    down: bool = False

    @property
    def complete(self) -> bool:
        """Every command of the batch has its final result."""
        return not self.pending

    @classmethod
    def unsent(cls, batch: Batch, detail: str) -> Delivery:
        """Nothing of the batch settled (e.g. the sender failed unexpectedly): keep it all."""
        return cls(pending=batch.commands, detail=detail)


# Not slotted: orjson encodes a dataclass with a __dict__ three times as fast (0.8 against
# 2.2 us for these fields), and building it costs the same.
@dataclass(kw_only=True)
class OutcomeRecord:
    """One record per command on the outcomes topic, keyed by customer.

    Downstream consumers dedupe on `command_id`. A plain dataclass encoded by orjson
    (`encode_outcome`): built and encoded once per command, a pydantic model cost ten times
    as much CPU, and a frozen dataclass four times as much to build (3.6 against 0.9 us for
    its 33 fields); treat it as immutable. Pydantic still reads its annotations for the
    published JSON Schema (scripts/gen_schemas.py) and for validating records read back
    (`OUTCOME_ADAPTER`).
    """

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    command_id: Annotated[
        str, Field(description="Deterministic id of the command; dedupe key downstream.")
    ]
    event_id: Annotated[str, Field(description="CloudEvents id of the source event.")]
    topic: str
    partition: int
    offset: int
    rule: str
    action: str
    subject: Annotated[str, Field(description="Promotion or target name from the rules file.")]
    promotion_id: int | None = None
    promo_identifier: str | None = None
    program_id: int | None = None
    target_group_id: int | None = None
    target_id: int | None = None
    identifier_name: str
    identifier_value: str
    order_id: Annotated[str | None, Field(description="The event's data.order_id.")] = None
    status: OutcomeStatus
    error_class: ErrorClass | None = None
    error_code: int | None = None
    error_message: str | None = None
    issual_id: Annotated[
        str | None,
        Field(
            description="issualId of the customer's enrolment in the promotion. None for an"
            " earn on a direct-issue promotion: Capillary answers a dummy issualId there,"
            " left out."
        ),
    ] = None
    earned_id: str | None = None
    revoked_earn_ids: list[int] = field(default_factory=list)
    revoked_issual_id: str | None = None
    attempts: int
    batch_id: str | None = None
    request_id: Annotated[str | None, Field(description="X-Cap-Requestid of the final call.")] = (
        None
    )
    skip_reason: Annotated[
        str | None,
        Field(
            description="Why a skipped command was not sent: order_returned, nothing_earned,"
            " order_unknown."
        ),
    ] = None
    verified_by: Annotated[
        str | None,
        Field(
            description="'lookup' when the call's answer was lost and the customer lookup"
            " showed the command applied (no second call was made)."
        ),
    ] = None
    received_at: Annotated[
        datetime, Field(description="When the service decoded the source event.")
    ]
    completed_at: Annotated[datetime, Field(description="When the result was known.")]


# Validates outcome records read from the topic (tests, tools) against the published contract.
OUTCOME_ADAPTER: Final = TypeAdapter(OutcomeRecord)


def encode_outcome(record: OutcomeRecord) -> bytes:
    """The record's JSON, as the schema describes it (UTC times end in Z, as pydantic's did)."""
    return orjson.dumps(record, option=orjson.OPT_UTC_Z)


def outcome_record(
    command: Command,
    result: CommandResult,
    *,
    received_at: datetime,
    completed_at: datetime,
) -> OutcomeRecord:
    """Join a command with its result into the published record."""
    promotion = command.promotion
    target = command.target
    return OutcomeRecord(
        command_id=command.command_id,
        event_id=command.event_id,
        topic=command.position.topic,
        partition=command.position.partition,
        offset=command.position.offset,
        rule=command.rule,
        # The members, not `.value` (an enum property costs a lookup per record): a StrEnum is
        # its text, to orjson, to pydantic and to the logs.
        action=command.action,
        subject=command.subject,
        promotion_id=promotion.promotion_id if promotion else None,
        promo_identifier=promotion.promo_identifier if promotion else None,
        program_id=promotion.program_id if promotion else None,
        target_group_id=target.target_group_id if target else None,
        target_id=target.target_id if target else None,
        identifier_name=command.identifier_name,
        identifier_value=command.identifier_value,
        order_id=command.order_id,
        status=result.status,
        error_class=result.error_class,
        error_code=result.error_code,
        error_message=result.error_message,
        # The client and the verification leave a dummy out already; this holds for any result.
        issual_id=None if command.issual_id_is_dummy else result.issual_id,
        earned_id=result.earned_id,
        revoked_earn_ids=list(result.revoked_earn_ids),
        revoked_issual_id=result.revoked_issual_id,
        attempts=result.attempts,
        batch_id=result.batch_id,
        request_id=result.request_id,
        verified_by=result.extra.get("verified_by"),
        skip_reason=result.extra.get("skip_reason"),
        received_at=received_at,
        completed_at=completed_at,
    )
