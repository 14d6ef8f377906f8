"""The Capillary client as the engine's sender port, and client hooks to Prometheus series."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from types import MappingProxyType
from typing import Literal

import structlog

from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    CapillaryClient,
    ClientHooks,
    EndpointLabel,
    LookupFailedError,
    UnavailableReason,
)
from promo_bridge.domain.commands import Batch, BeforeRequest, Command, IdentifierName, PromotionRef
from promo_bridge.domain.outcomes import CommandResult, Delivery, OutcomeStatus
from promo_bridge.domain.reconcile import Finding, Standing, Verdict, verified_result, verify
from promo_bridge.domain.rules import RuleSet
from promo_bridge.observability.metrics import Metrics

log = structlog.get_logger(__name__)


class CapillarySender:
    """The engine's sender port over the client: the client's exceptions become `Delivery`.

    This is where Capillary's exception tree ends: the engine sees only domain values.
    """

    def __init__(self, client: CapillaryClient, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    async def send(self, batch: Batch, *, before_request: BeforeRequest | None = None) -> Delivery:
        """Send the batch; every command comes back either settled or pending.

        Unsure commands (`batch.verify`) are first looked up: those the lookup shows applied,
        or cannot decide, settle without a call; the others go out with the rest.
        """
        verified: tuple[CommandResult, ...] = ()
        if batch.skip:
            verified = tuple(
                CommandResult(
                    c.command_id,
                    OutcomeStatus.SKIPPED,
                    attempts=0,
                    extra={"skip_reason": batch.skip[c.command_id]},
                )
                for c in batch.commands
                if c.command_id in batch.skip
            )
            rest = tuple(c for c in batch.commands if c.command_id not in batch.skip)
            if not rest:
                return Delivery(completed=verified)
            batch = dataclasses.replace(
                batch,
                commands=rest,
                skip=MappingProxyType({}),
                verify=MappingProxyType(
                    {k: v for k, v in batch.verify.items() if k not in batch.skip}
                ),
            )
        if batch.verify:
            try:
                verified += await self._verify(batch)
            except (ApiUnavailable, AuthenticationFailed) as exc:
                # Nothing is sent before the unsure commands are settled: a lane's order holds.
                return self._incomplete(
                    batch, exc, completed=verified, pending=batch.commands, unsure=batch.verify
                )
            settled = {result.command_id for result in verified}
            rest = tuple(c for c in batch.commands if c.command_id not in settled)
            if not rest:
                return Delivery(completed=verified)
            batch = dataclasses.replace(batch, commands=rest, verify=MappingProxyType({}))
        try:
            results = await self._client.send(batch, before_request=before_request)
        except (ApiUnavailable, AuthenticationFailed) as exc:
            return self._incomplete(
                batch, exc, completed=verified, pending=exc.pending, unsure=exc.unsure
            )
        return Delivery(completed=verified + tuple(results))

    def _incomplete(
        self,
        batch: Batch,
        exc: ApiUnavailable | AuthenticationFailed,
        *,
        pending: tuple[Command, ...],
        unsure: Iterable[str],
        completed: tuple[CommandResult, ...] = (),
    ) -> Delivery:
        pause_s = None
        down = False
        if isinstance(exc, ApiUnavailable):
            self._metrics.batches_unavailable.labels(batch.key.endpoint.value).inc()
            pause_s = exc.retry_after
            down = is_down(exc)
        return Delivery(
            completed=completed + exc.completed,
            pending=pending,
            pause_s=pause_s,
            auth_refused=isinstance(exc, AuthenticationFailed),
            attempts=exc.attempts,
            detail=str(exc),
            unsure=frozenset(unsure),
            down=down,
        )

    async def _verify(self, batch: Batch) -> tuple[CommandResult, ...]:
        """Look up each unsure command's holding; the results of those that need no call."""
        commands = [c for c in batch.commands if c.command_id in batch.verify]
        answers = await asyncio.gather(
            *(self._look_up(command) for command in commands), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, LookupFailedError):
                raise answer
        results = []
        for command, answer in zip(commands, answers, strict=True):
            if isinstance(answer, LookupFailedError):
                # The lookup cannot answer for this customer (a code the API gives, an answer
                # that contradicts itself): as undecided, never resent blindly.
                verdict = Verdict(Finding.UNDECIDED, reason=f"lookup failed: {answer}")
            else:
                assert not isinstance(answer, BaseException)
                verdict = verify(command, answer, batch.verify[command.command_id])
            log.info(
                "unsure_command_verified",
                command_id=command.command_id,
                action=command.action.value,
                finding=verdict.finding.value,
                reason=verdict.reason or None,
            )
            result = verified_result(command, verdict)
            if result is not None:
                results.append(result)
        return tuple(results)

    async def _look_up(self, command: Command) -> Standing | None:
        if command.promotion is None:
            return None
        return await self._client.lookup_promotion(
            command.identifier_name, command.identifier_value, command.source, command.promotion
        )


def is_down(exc: ApiUnavailable) -> bool:
    """Whether the API is merely down (wait without limit) rather than failing (bounded).

    Down: the request never reached it, it throttles, or it says when to come back (a 503 with
    Retry-After). Anything else that answered, but not usefully, counts toward the bound.
    """
    reason = exc.reason
    return reason in {UnavailableReason.CONNECT_ERROR, UnavailableReason.THROTTLED} or (
        reason is UnavailableReason.SERVER_ERROR and exc.retry_after is not None
    )


def metrics_hooks(metrics: Metrics) -> ClientHooks:
    """Client hooks that feed the service's Prometheus series."""

    def on_request(
        endpoint: EndpointLabel, status: int | None, seconds: float, _request_id: str | None
    ) -> None:
        label = str(status) if status is not None else "error"
        metrics.api_latency.labels(endpoint.value, label).observe(seconds)

    def on_retry(endpoint: EndpointLabel, reason: UnavailableReason) -> None:
        metrics.api_retries.labels(endpoint.value, reason.value).inc()

    def on_throttle_wait(endpoint: EndpointLabel, seconds: float) -> None:
        metrics.api_throttle_wait.labels(endpoint.value).inc(seconds)

    def on_token_refresh(_ok: bool, _seconds: float) -> None:
        metrics.token_refreshes.inc()

    return ClientHooks(
        on_request=on_request,
        on_retry=on_retry,
        on_throttle_wait=on_throttle_wait,
        on_token_refresh=on_token_refresh,
    )


class BudgetShare:
    """This replica's part of the org's API budgets, following its input partitions.

    With `split` "partitions" the client starts at a share of 0 (no call before the first
    assignment) and `apply(assigned, total)`, which the consumer loop calls on every change of
    the assignment, sets it; with "none" the client keeps the whole budgets and `apply` does
    nothing. Either way the gauge shows the calls per minute in force.
    """

    def __init__(
        self, client: CapillaryClient, metrics: Metrics, split: Literal["partitions", "none"]
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._split = split
        if split == "partitions":
            self._show(client.set_budget_share(0, 0))
        else:
            self._show({name: limit for name, (_, limit) in client.budget_use().items()})

    def apply(self, assigned: int, total: int) -> None:
        """Take `assigned` of `total` input partitions' share; log it and update the gauge."""
        if self._split != "partitions":
            return
        calls = self._client.set_budget_share(assigned, total)
        self._show(calls)
        log.info("api_budget_share", assigned=assigned, total=total, calls_per_minute=calls)
        if assigned and not all(calls.values()):
            # floor(budget x assigned / total) is 0: partitions this replica holds get no call.
            log.warning(
                "api_budget_share_empty",
                endpoints=sorted(name for name, n in calls.items() if not n),
                hint="raise the calls-per-minute budgets to at least the input partitions",
            )

    def _show(self, calls: dict[str, int]) -> None:
        for endpoint, limit in calls.items():
            self._metrics.api_budget.labels(endpoint).set(limit)


# A lookup of a customer that cannot exist: Basic credentials are proven only by a real call,
# and a lookup changes nothing.
PROBE_CUSTOMER = "0"
PROBE_SOURCE = "INSTORE"


def probe_promotion(rules: RuleSet | None) -> PromotionRef:
    """The promotion a credentials lookup asks about: one of the org's own, where rules name one."""
    first = next(iter(rules.promotions.values()), None) if rules is not None else None
    return first.ref if first is not None else PromotionRef(program_id=1, promotion_id=1)


async def prove_credentials(client: CapillaryClient, basic: bool, promotion: PromotionRef) -> None:
    """Prove the credentials with no side effect: a token (OAuth) or a lookup (Basic).

    Raises AuthenticationFailed when they are refused, ApiUnavailable when the API cannot be
    reached, LookupFailedError when the lookup itself is refused (the credentials were taken).
    """
    if not basic:
        await client.authenticate()
        return
    await client.lookup_promotion(IdentifierName.ID, PROBE_CUSTOMER, PROBE_SOURCE, promotion)
