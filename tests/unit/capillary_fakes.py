"""Fakes at the edge for the Capillary client tests: a fake clock, commands, canned answers.

The client only meets the outside world through an httpx transport, a clock, a sleep and a
random source; these stand in for all four.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from promo_bridge.capillary import BasicAuth, CapillaryClient, ClientConfig, ClientHooks, OAuthAuth
from promo_bridge.domain.commands import (
    Action,
    Batch,
    Command,
    EventPosition,
    IdentifierName,
    PromotionRef,
    TargetRef,
)

BASE_URL = "https://eu.api.capillarytech.com"
PROMOTION = PromotionRef(program_id=2714, promotion_id=202779)
TARGET = TargetRef(target_group_id=12, target_id=34)
PASSWORD = "server123"
OAUTH_SECRET = "s3cr3t-oauth-value"


class FakeClock:
    """Monotonic time that only moves when someone sleeps (or the test advances it)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        # Let other tasks run, as a real sleep would.
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class VirtualClock(FakeClock):
    """Virtual time for concurrent tests: sleepers wake in time order, only once all is idle.

    `run(awaitable)` drives the test: whenever no task can make progress, time jumps to the
    earliest sleeper's wake-up. Unlike FakeClock, concurrent sleeps overlap as they would in
    real time.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        super().__init__(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), wake))
        await wake

    async def _settle(self, task: asyncio.Future[Any]) -> None:
        # Everything here resolves without real I/O, so a burst of yields lets every ready
        # task run until it blocks on a sleeper, a lock or an event.
        for _ in range(200):
            if task.done():
                return
            await asyncio.sleep(0)

    async def run(self, awaitable: Awaitable[Any]) -> Any:
        """Await `awaitable`, advancing virtual time whenever everything is blocked."""
        task = asyncio.ensure_future(awaitable)
        idle_rounds = 0
        while not task.done():
            await self._settle(task)
            if task.done():
                break
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                idle_rounds += 1
                if idle_rounds > 50:
                    task.cancel()
                    raise RuntimeError("deadlock: every task waits and no one sleeps")
                continue
            idle_rounds = 0
            wake_at, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake_at)
            wake.set_result(None)
        return task.result()


def command(
    n: int,
    *,
    action: Action = Action.ENROL,
    identifier_name: IdentifierName = IdentifierName.ID,
    value: str | None = None,
    promotion: PromotionRef | None = PROMOTION,
    target: TargetRef | None = None,
    source: str = "INSTORE",
    earn_ids: tuple[int, ...] = (),
    command_id: str | None = None,
) -> Command:
    """Command number `n`; customer ids default to 423927000 + n."""
    if action is Action.UNENROLL:
        promotion, target = None, target or TARGET
    return Command(
        command_id=command_id or f"cmd-{n}",
        event_id=f"evt-{n}",
        position=EventPosition("orders", 0, n),
        rule="rule",
        action=action,
        subject="subject",
        identifier_name=identifier_name,
        identifier_value=value if value is not None else str(423_927_000 + n),
        source=source,
        promotion=promotion,
        target=target,
        earn_ids=earn_ids,
    )


def batch(commands: Sequence[Command], *, batch_id: str = "batch-1", attempts: int = 0) -> Batch:
    """A batch of `commands` (they must share a batch key)."""
    return Batch(
        batch_id=batch_id, key=commands[0].batch_key, commands=tuple(commands), attempts=attempts
    )


def commands(count: int, **kwargs: Any) -> list[Command]:
    """`count` commands numbered from 0."""
    return [command(n, **kwargs) for n in range(count)]


def config(**overrides: Any) -> ClientConfig:
    """A Basic-auth config with quick backoff; override any field."""
    values: dict[str, Any] = {
        "base_url": BASE_URL,
        "auth": BasicAuth(till_code="store.server", password=PASSWORD),
        "backoff_base_s": 0.5,
        "backoff_cap_s": 8.0,
        "calls_per_minute": 1_000_000,
    }
    values.update(overrides)
    return ClientConfig(**values)


def oauth_config(**overrides: Any) -> ClientConfig:
    """An OAuth config; override any field."""
    return config(auth=OAuthAuth(key="client-key", secret=OAUTH_SECRET), **overrides)


def ok(entity_id: int | str, **result: Any) -> dict[str, Any]:
    """A successful bulk entry."""
    return {
        "result": {"entityType": "CUSTOMER", "entityId": int(entity_id), **result},
        "errors": [],
        "warnings": [],
    }


def err(code: int, message: str = "error") -> dict[str, Any]:
    """A failed bulk entry."""
    return {"errors": [{"status": False, "code": code, "message": message}], "warnings": []}


def bulk(*entries: dict[str, Any]) -> dict[str, Any]:
    """A bulk response body."""
    failures = sum(1 for e in entries if "result" not in e)
    return {"response": list(entries), "totalCount": len(entries), "failureCount": failures}


def applied_for(request: httpx.Request) -> dict[str, Any]:
    """A body applying every customer of a bulk request (entityId = identifierValue)."""
    body = json.loads(request.content)
    return bulk(*(ok(c["identifierValue"], issualId="1") for c in body["customers"]))


def holding(
    promotion_id: int | str = 202779,
    *,
    program_id: int = 2714,
    promo_identifier: str | None = None,
    issual_id: int | str | None = "845",
    earned_ids: Sequence[int | str] = (),
    revoked_earn_ids: Sequence[int | str] = (),
    status: str = "AVAILABLE_TO_EARN",
) -> dict[str, Any]:
    """One promotion entry of a lookup answer, as the simulator serves it."""
    return {
        "programId": program_id,
        "promotionId": promotion_id,
        "promoIdentifier": promo_identifier,
        "promotionName": "big-spender",
        "pointsOfferType": "LOYALTY_EARNING",
        "loyaltyEarningType": "ISSUE_AND_EARN",
        "active": True,
        "promotionStatusForCustomer": status,
        "issualId": issual_id,
        "earnedIds": list(earned_ids),
        "revokedEarnIds": list(revoked_earn_ids),
    }


def lookup_body(*holdings: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    """A lookup answer listing `holdings` (totalCount defaults to their number)."""
    data = {
        "customerId": 423927000,
        "promotions": list(holdings),
        "totalCount": len(holdings) if total is None else total,
    }
    return {"data": data, "errors": [], "warnings": []}


def unknown_customer() -> dict[str, Any]:
    """The lookup answer for a customer the API does not know (HTTP 200, code 8015)."""
    error = {
        "status": False,
        "code": 8015,
        "message": "Customer not found for the given identifiers",
    }
    return {"data": None, "errors": [error], "warnings": []}


Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class Api:
    """A scripted fake API: records every request and answers through `handler`."""

    handler: Handler
    requests: list[httpx.Request] = field(default_factory=list)
    clock: FakeClock | None = None
    times: list[float] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.clock is not None:
            self.times.append(self.clock.now)
        response = self.handler(request)
        if not isinstance(response, httpx.Response):
            response = await response
        return response

    def bodies(self, path_suffix: str = "") -> list[Any]:
        """JSON bodies of the requests whose path ends with `path_suffix`."""
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith(path_suffix)]

    def customers(self) -> list[list[str]]:
        """identifierValues of each bulk request, in order."""
        return [
            [c["identifierValue"] for c in body["customers"]]
            for body in self.bodies()
            if isinstance(body, dict) and "customers" in body
        ]


def make_client(
    handler: Handler,
    *,
    cfg: ClientConfig | None = None,
    clock: FakeClock | None = None,
    rng: Callable[[], float] = lambda: 0.5,
    hooks: ClientHooks | None = None,
) -> tuple[CapillaryClient, Api, FakeClock]:
    """A client wired to a scripted API and a fake clock."""
    clock = clock or FakeClock()
    api = Api(handler, clock=clock)
    client = CapillaryClient(
        cfg or config(),
        transport=httpx.MockTransport(api),
        clock=clock,
        sleep=clock.sleep,
        rng=rng,
        hooks=hooks,
    )
    return client, api, clock
