"""The Capillary client against the simulator over real HTTP (uvicorn on 127.0.0.1).

The simulator is written from the endpoint pages independently of the client, so agreement
here is evidence that both read the pages the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    BasicAuth,
    CapillaryClient,
    ClientConfig,
    OAuthAuth,
    PromotionStanding,
    UnavailableReason,
)
from promo_bridge.domain.commands import (
    Action,
    Batch,
    Command,
    EventPosition,
    IdentifierName,
    PromotionRef,
    PromotionType,
    TargetRef,
)
from promo_bridge.domain.outcomes import CommandResult, ErrorClass, OutcomeStatus
from promo_bridge.simulator import Credentials, Faults, Simulator, serve

pytestmark = pytest.mark.integration

BIG_SPENDER = PromotionRef(program_id=2714, promotion_id=202779)
DIRECT_10PCT = PromotionRef(
    program_id=2714, promo_identifier="95c77d88-470c-4dd3-bde4-606ae1b64277"
)
MONTHLY_MILESTONE = TargetRef(target_group_id=12, target_id=34)
# The simulator's invented "not enrolled in the target" code (see its package docstring).
SIM_NOT_ENROLLED = 310120
DEV = Credentials()


def _command(n: int, action: Action = Action.ENROL, customer: int | None = None) -> Command:
    unenroll = action is Action.UNENROLL
    return Command(
        command_id=f"{action}-{n}",
        event_id=f"evt-{n}",
        position=EventPosition("orders", 0, n),
        rule="rule",
        action=action,
        subject="subject",
        identifier_name=IdentifierName.ID,
        identifier_value=str(customer if customer is not None else 910_000_000 + n),
        source="INSTORE",
        promotion=None if unenroll else BIG_SPENDER,
        target=MONTHLY_MILESTONE if unenroll else None,
    )


def _batch(commands: list[Command], batch_id: str) -> Batch:
    return Batch(batch_id=batch_id, key=commands[0].batch_key, commands=tuple(commands))


def _config(base_url: str, **values: Any) -> ClientConfig:
    values.setdefault("auth", BasicAuth(till_code=DEV.till, password=DEV.password))
    # Only the budget test wants the budget; elsewhere 100/min would just slow the test.
    values.setdefault("calls_per_minute", 100_000)
    values.setdefault("lookup_calls_per_minute", 100_000)
    return ClientConfig(
        base_url=base_url,
        unenroll_not_enrolled_codes=frozenset({SIM_NOT_ENROLLED}),
        **values,
    )


def _oauth() -> OAuthAuth:
    return OAuthAuth(key=DEV.oauth_key, secret=DEV.oauth_secret)


def _scaled_monotonic(factor: float) -> Callable[[], float]:
    """A monotonic clock running `factor` times faster: the simulator's minute, compressed."""
    origin = time.monotonic()
    return lambda: origin + (time.monotonic() - origin) * factor


async def _one(client: CapillaryClient, command: Command, batch_id: str) -> CommandResult:
    [result] = await client.send(_batch([command], batch_id))
    return result


async def test_lifecycle_of_a_customer_matches_the_simulator() -> None:
    """Enrol, earn, revoke earn, revoke enrol, replayed revoke, un-enrol twice: all as expected."""
    sim = Simulator()
    customer = 910_000_001
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        enrol = await _one(client, _command(1, Action.ENROL, customer), "b1")
        earn = await _one(client, _command(2, Action.EARN, customer), "b2")
        revoke_earn = await _one(client, _command(3, Action.REVOKE_EARN, customer), "b3")
        revoke_enrol = await _one(client, _command(4, Action.REVOKE_ENROL, customer), "b4")
        replayed = await _one(client, _command(5, Action.REVOKE_ENROL, customer), "b5")
        unenrol = await _one(client, _command(6, Action.UNENROLL, customer), "b6")
        unenrol_again = await _one(client, _command(7, Action.UNENROLL, customer), "b7")
    assert enrol.status is OutcomeStatus.APPLIED
    assert enrol.issual_id is not None
    assert earn.status is OutcomeStatus.APPLIED
    assert earn.earned_id is not None
    assert revoke_earn.status is OutcomeStatus.APPLIED
    assert revoke_earn.revoked_earn_ids == (int(earn.earned_id),)
    assert revoke_enrol.status is OutcomeStatus.APPLIED
    assert replayed.status is OutcomeStatus.ALREADY_APPLIED
    assert unenrol.status is OutcomeStatus.APPLIED
    assert (unenrol_again.status, unenrol_again.error_code) == (
        OutcomeStatus.ALREADY_APPLIED,
        SIM_NOT_ENROLLED,
    )
    assert all(r.request_id for r in (enrol, earn, revoke_earn, unenrol))


async def test_a_direct_issue_earn_reports_no_issual_id_and_keeps_the_dummy_apart() -> None:
    """Two EARNs of direct-10pct: each has an earnedId, issual_id None, its dummy in extra."""
    sim = Simulator()
    customer = 910_000_011
    direct = dataclasses.replace(DIRECT_10PCT, kind=PromotionType.DIRECT_ISSUE)
    earns = [
        dataclasses.replace(_command(n, Action.EARN, customer), promotion=direct) for n in (1, 2)
    ]
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        results = [await _one(client, earn, f"b{n}") for n, earn in enumerate(earns)]
        standing = await _lookup(client, customer, DIRECT_10PCT)
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 2
    assert [r.issual_id for r in results] == [None, None]
    dummies = [r.extra["dummy_issual_id"] for r in results]
    assert all(dummy.isdecimal() for dummy in dummies)
    assert standing is not None
    assert standing.earned_ids == {str(r.earned_id) for r in results}


async def test_inactive_promotion_is_a_config_rejection_for_the_whole_batch() -> None:
    """A batch on the simulator's inactive promotion: one request-level 8892 rejects all."""
    sim = Simulator()
    inactive = PromotionRef(program_id=2714, promotion_id=202782)
    commands = [
        Command(
            command_id=f"c{n}",
            event_id=f"e{n}",
            position=EventPosition("orders", 0, n),
            rule="rule",
            action=Action.ENROL,
            subject="summer",
            identifier_name=IdentifierName.ID,
            identifier_value=str(910_000_100 + n),
            source="INSTORE",
            promotion=inactive,
        )
        for n in range(3)
    ]
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        results = await client.send(_batch(commands, "inactive"))
    assert [(r.status, r.error_class, r.error_code) for r in results] == [
        (OutcomeStatus.REJECTED, ErrorClass.CONFIG, 8892)
    ] * 3


async def test_fifty_concurrent_calls_with_expired_token_make_one_token_request() -> None:
    """Tokens expired at the simulator: 50 concurrent calls cause exactly one token request."""
    sim = Simulator()
    async with (
        serve(sim) as server,
        CapillaryClient(_config(server.base_url, auth=_oauth())) as client,
    ):
        await _one(client, _command(0), "warm-up")
        before = sim.calls[-1].seq
        sim.expire_tokens()
        results = await asyncio.gather(*(_one(client, _command(n), f"b{n}") for n in range(1, 51)))
    assert all(r.status is OutcomeStatus.APPLIED for r in results)
    assert len(sim.calls_since(before, endpoint="token")) == 1
    assert sim.ledger.total("ENROL") == 51


async def test_fifty_concurrent_calls_after_token_ttl_make_one_token_request() -> None:
    """The client's own clock passing the ttl: 50 concurrent calls share one refresh."""
    sim = Simulator()
    offset = [0.0]
    async with (
        serve(sim) as server,
        CapillaryClient(
            _config(server.base_url, auth=_oauth()),
            clock=lambda: time.monotonic() + offset[0],
        ) as client,
    ):
        await _one(client, _command(0), "warm-up")
        before = sim.calls[-1].seq
        offset[0] = DEV.token_ttl_seconds + 1
        results = await asyncio.gather(*(_one(client, _command(n), f"b{n}") for n in range(1, 51)))
    assert all(r.status is OutcomeStatus.APPLIED for r in results)
    assert len(sim.calls_since(before, endpoint="token")) == 1


async def test_calls_over_budget_are_spread_with_zero_429s() -> None:
    """30 calls per (compressed) minute on both sides: 45 calls all pass, none throttled."""
    # The simulator's 60 s window runs 30x fast (2 s); the client's budget window is 2 s.
    sim = Simulator(
        faults=Faults(rate_limits={"enrolAndEarn": 30}), monotonic=_scaled_monotonic(30.0)
    )
    async with (
        serve(sim) as server,
        CapillaryClient(
            _config(server.base_url, calls_per_minute=30, budget_window_s=2.0, max_attempts=1)
        ) as client,
    ):
        started = time.monotonic()
        results = await asyncio.gather(*(_one(client, _command(n), f"b{n}") for n in range(45)))
        elapsed = time.monotonic() - started
    enrol_calls = sim.calls_since(0, endpoint="enrolAndEarn")
    assert all(r.status is OutcomeStatus.APPLIED for r in results)
    assert [c.status for c in enrol_calls] == [200] * 45
    assert all(c.outcome != "rate_limited" for c in enrol_calls)
    # Spread, not bursted: 45 calls at one per 2/30 s take about 44 intervals.
    assert elapsed >= 44 * (2.0 / 30) * 0.95


# --------------------------------------------------------------------------- lookup


async def _lookup(
    client: CapillaryClient, customer: int, promotion: PromotionRef = BIG_SPENDER
) -> PromotionStanding | None:
    return await client.lookup_promotion(IdentifierName.ID, str(customer), "INSTORE", promotion)


async def test_lookup_of_an_enrolled_customer_with_earns_returns_them() -> None:
    """Enrol, earn twice, revoke one earn: the lookup shows the issual, both earns, the revoke."""
    sim = Simulator()
    customer = 910_000_201
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        enrol = await _one(client, _command(1, Action.ENROL, customer), "b1")
        first = await _one(client, _command(2, Action.EARN, customer), "b2")
        second = await _one(client, _command(3, Action.EARN, customer), "b3")
        earned = await _lookup(client, customer)
        revoke = dataclasses.replace(
            _command(4, Action.REVOKE_EARN, customer), earn_ids=(int(str(first.earned_id)),)
        )
        await _one(client, revoke, "b4")
        after_revoke = await _lookup(client, customer)
    assert earned == PromotionStanding(
        issual_id=enrol.issual_id,
        earned_ids=frozenset({str(first.earned_id), str(second.earned_id)}),
        revoked_earn_ids=frozenset(),
        status="AVAILABLE_TO_REDEEM",
    )
    assert after_revoke is not None
    assert after_revoke.earned_ids == frozenset({str(second.earned_id)})
    assert after_revoke.revoked_earn_ids == frozenset({str(first.earned_id)})


async def test_lookup_by_promo_identifier_finds_the_holding() -> None:
    """A catalogue holding (direct-10pct, earn 974) is found by promoIdentifier."""
    sim = Simulator()
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        standing = await _lookup(client, 423_927_867, DIRECT_10PCT)
    assert standing is not None
    assert standing.earned_ids == frozenset({"974"})


async def test_lookup_of_an_unknown_customer_is_none() -> None:
    """A customer the simulator never saw answers 8015: None, and the lookup registers nobody."""
    sim = Simulator()
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        standing = await _lookup(client, 910_999_999)
    assert standing is None
    assert sim.stats["known_customers"] == len(sim.catalogue.customers)


async def test_lookup_with_an_expired_token_refreshes_it_once() -> None:
    """OAuth: tokens expired at the simulator; the lookup fetches one new token and answers."""
    sim = Simulator()
    async with (
        serve(sim) as server,
        CapillaryClient(_config(server.base_url, auth=_oauth())) as client,
    ):
        await _lookup(client, 423_927_867)
        before = sim.calls[-1].seq
        sim.expire_tokens()
        standing = await _lookup(client, 423_927_867)
    assert standing is not None
    assert standing.issual_id == "845"
    assert len(sim.calls_since(before, endpoint="token")) == 1


async def test_a_token_refused_twice_reports_its_top_level_code() -> None:
    """The simulator's {"code": 498, ...} after the refresh too: AuthenticationFailed code 498."""
    sim = Simulator(faults=Faults(expired_tokens=2))
    async with (
        serve(sim) as server,
        CapillaryClient(_config(server.base_url, auth=_oauth())) as client,
    ):
        with pytest.raises(AuthenticationFailed) as caught:
            await _one(client, _command(0), "b0")
    assert (caught.value.code, caught.value.http_status) == (498, 401)
    assert sim.ledger.total() == 0


# --------------------------------------------------------------------------- lost answers


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("drop", UnavailableReason.NETWORK_ERROR), ("timeout", UnavailableReason.TIMEOUT)],
)
async def test_an_earn_whose_answer_is_lost_after_apply_is_unsure_and_not_resent(
    fault: str, reason: UnavailableReason
) -> None:
    """The simulator applies the EARN, then drops or outwaits the call: pending, unsure, once."""
    sim = Simulator()
    customer = 910_000_301
    async with serve(sim) as server:
        # Short enough for the test, far below the simulator's hold of a "timeout" call.
        cfg = _config(server.base_url, read_timeout_s=0.5)
        async with CapillaryClient(cfg) as client:
            await _one(client, _command(1, Action.ENROL, customer), "b1")
            sim.set_faults(
                script=[fault],
                process_before_fault=True,
                endpoints=["enrolAndEarn"],
                timeout_seconds=30.0,
            )
            earn = _command(2, Action.EARN, customer)
            with pytest.raises(ApiUnavailable) as caught:
                await client.send(_batch([earn], "b2"))
            standing = await _lookup(client, customer)
    assert caught.value.pending == (earn,)
    assert caught.value.unsure == frozenset({earn.command_id})
    assert caught.value.reason is reason
    assert sim.ledger.count(customer_id=customer, action="EARN") == 1
    assert len(sim.calls_since(0, endpoint="enrolAndEarn")) == 2
    # What the engine will verify with: the earn is there.
    assert standing is not None
    assert len(standing.earned_ids) == 1


async def test_an_earn_answered_504_is_unsure_and_not_resent() -> None:
    """The simulator's 504 (it applied nothing): pending, unsure, one call; the lookup decides."""
    sim = Simulator()
    customer = 910_000_302
    async with serve(sim) as server, CapillaryClient(_config(server.base_url)) as client:
        await _one(client, _command(1, Action.ENROL, customer), "b1")
        sim.set_faults(error_rates={504: 1.0}, endpoints=["enrolAndEarn"])
        earn = _command(2, Action.EARN, customer)
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(_batch([earn], "b2"))
        standing = await _lookup(client, customer)
    assert caught.value.unsure == frozenset({earn.command_id})
    assert caught.value.reason is UnavailableReason.SERVER_ERROR
    assert len(sim.calls_since(0, endpoint="enrolAndEarn")) == 2
    assert standing is not None
    assert standing.earned_ids == frozenset()
