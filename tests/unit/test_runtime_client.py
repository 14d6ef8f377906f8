"""The sender port over the client: unsure commands are looked up before anything is sent."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from test_ledger import commands

from promo_bridge.capillary import (
    ApiUnavailable,
    LookupFailedError,
    PromotionStanding,
    UnavailableReason,
)
from promo_bridge.domain.commands import Batch, BeforeRequest, Command
from promo_bridge.domain.outcomes import CommandResult, ErrorClass, OutcomeStatus
from promo_bridge.observability.metrics import Metrics
from promo_bridge.runtime_client import CapillarySender, is_down


class FakeClient:
    """Answers lookups from a table (or raises), and records what is sent."""

    def __init__(self, standings: dict[str, PromotionStanding | Exception | None]) -> None:
        self.standings = standings
        self.sent: list[Command] = []

    async def lookup_promotion(
        self, _name: object, value: str, _source: str, _promotion: object
    ) -> PromotionStanding | None:
        answer = self.standings[value]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def send(
        self, batch: Batch, *, before_request: BeforeRequest | None = None
    ) -> list[CommandResult]:
        if before_request is not None:
            await before_request(batch.commands)
        self.sent.extend(batch.commands)
        return [
            CommandResult(c.command_id, OutcomeStatus.APPLIED, earned_id="new")
            for c in batch.commands
        ]


def earn_batch(*customers: str, verify: tuple[str, ...] = ()) -> Batch:
    earns = [commands(customer)[1] for customer in customers]
    batch = Batch("b1", earns[0].batch_key, tuple(earns))
    known = {c.command_id: frozenset({"1"}) for c in earns if c.identifier_value in verify}
    return dataclasses.replace(batch, verify=MappingProxyType(known))


def standing(*earned: str) -> PromotionStanding:
    return PromotionStanding(
        issual_id="845",
        earned_ids=frozenset(earned),
        revoked_earn_ids=frozenset(),
        status="AVAILABLE_TO_REDEEM",
    )


async def test_an_unsure_earn_the_lookup_shows_applied_is_not_sent_again() -> None:
    """One earn the ledger does not know: applied by lookup; the sure command is sent."""
    client = FakeClient({"7": standing("1", "2")})
    delivery = await CapillarySender(client, Metrics()).send(earn_batch("7", "8", verify=("7",)))  # type: ignore[arg-type]
    by_id = {r.command_id: r for r in delivery.completed}
    assert [c.identifier_value for c in client.sent] == ["8"]
    seven = by_id[commands("7")[1].command_id]
    assert (seven.status, seven.earned_id, seven.extra) == (
        OutcomeStatus.APPLIED,
        "2",
        {"verified_by": "lookup"},
    )
    assert delivery.complete


async def test_an_unsure_earn_the_lookup_shows_not_applied_is_sent() -> None:
    """No earn beyond the ledger's: the command goes out with the batch."""
    client = FakeClient({"7": standing("1")})
    delivery = await CapillarySender(client, Metrics()).send(earn_batch("7", verify=("7",)))  # type: ignore[arg-type]
    assert [c.identifier_value for c in client.sent] == ["7"]
    assert delivery.completed[0].extra == {}


async def test_a_lookup_that_cannot_answer_fails_the_command_unverified() -> None:
    """A lookup the API refuses for this customer: failed/unverified, never sent blindly."""
    client = FakeClient({"7": LookupFailedError("code 1101", code=1101, http_status=200)})
    delivery = await CapillarySender(client, Metrics()).send(earn_batch("7", verify=("7",)))  # type: ignore[arg-type]
    assert client.sent == []
    (result,) = delivery.completed
    assert (result.status, result.error_class) == (OutcomeStatus.FAILED, ErrorClass.UNVERIFIED)


async def test_a_lookup_unavailable_keeps_the_batch_pending_and_unsure() -> None:
    """The API down during verification: nothing sent, all pending, the unsure stay unsure."""
    down = ApiUnavailable("down", reason=UnavailableReason.CONNECT_ERROR)
    client = FakeClient({"7": down, "8": standing()})
    batch = earn_batch("7", "8", verify=("7",))
    delivery = await CapillarySender(client, Metrics()).send(batch)  # type: ignore[arg-type]
    assert client.sent == []
    assert delivery.pending == batch.commands
    assert delivery.unsure == frozenset(batch.verify)
    assert delivery.down


@pytest.mark.parametrize("reason", [UnavailableReason.CONNECT_ERROR, UnavailableReason.THROTTLED])
def test_connect_errors_and_throttling_are_down(reason: UnavailableReason) -> None:
    """Down reasons wait without limit; a retryable code or a timeout counts toward the bound."""
    assert is_down(ApiUnavailable("x", reason=reason))
    assert not is_down(ApiUnavailable("x", reason=UnavailableReason.RETRYABLE_CODE))
    assert not is_down(ApiUnavailable("x", reason=UnavailableReason.SERVER_ERROR))
    assert is_down(ApiUnavailable("x", reason=UnavailableReason.SERVER_ERROR, retry_after=3.0))
