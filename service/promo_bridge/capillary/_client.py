"""The Capillary client: a batch of commands in, one final result per command out.

How one `send(batch)` runs:

1. Commands that must never be sent (an unEnroll without a numeric customer id) settle at once.
2. The rest is cut into calls of at most the endpoint's batch limit. A customer appearing twice
   (two subjects aliasing one promotion) goes into a later "wave", so a call never carries one
   customer twice and the second command never overtakes the first.
3. Each call: wait for the endpoint's budget, then for a free in-flight slot, then send. Its
   answer is matched to the customers by position (see `_wire`):
   - final verdicts (applied, already applied, rejected, failed) are kept;
   - customers answering a retryable code are resent, alone, after a backoff;
   - a retryable failure of the whole call (network, timeout, 429, 5xx, malformed body) resends
     it after a backoff that honours Retry-After, up to `max_attempts` requests, except where
     the request may have been applied (see below);
   - an ambiguous answer splits the call in halves, each resent as a call of its own;
   - refused credentials refresh the OAuth token once and resend; refused again, they stop.
4. If every command settled, `send` returns the results in batch order. Otherwise it raises
   `ApiUnavailable` or `AuthenticationFailed` carrying the settled results (`completed`, to be
   published) and the unsettled commands (`pending`, to be kept and resent later): an API
   that is merely unavailable never produces a failure outcome, and a batch that partly went
   through still delivers its successes.

A call whose answer was lost (read or write timeout, connection broken after sending) may have
been applied, and the bulk calls take no idempotency key: resending could repeat the side
effect. So may a call answered HTTP 504 (a gateway stopped waiting for Capillary, which may
still complete the call) or a 2xx whose body cannot be read (Capillary took the call; what it
did is unreadable). For the actions in `ClientConfig.verify_unsure_actions` (ENROL and EARN by
default) such a call is not resent: its commands stay pending and are reported `unsure`, for
the caller to verify with `lookup_promotion` before sending them again. Other 5xx (500, 502,
503...) and 429 are resent: Capillary said the call failed or did not take it. Other actions
are resent in every case, the `on_retry` reason (`timeout`, `network_error` versus
`connect_error`) telling such resends apart; their repetition is answered with an
already-applied code.

`lookup_promotion` reads where one customer stands in one promotion. It is read-only, so every
retryable failure is retried, a timeout included; it has its own budget
(`lookup_calls_per_minute`) and shares the in-flight bound and the credentials.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx
import orjson
import structlog

from promo_bridge.capillary._auth import (
    Authenticator,
    BasicAuthenticator,
    Credentials,
    OAuthAuthenticator,
    request_error_reason,
)
from promo_bridge.capillary._config import BasicAuth, ClientConfig
from promo_bridge.capillary._errors import MAYBE_APPLIED_REASONS, UnavailableReason
from promo_bridge.capillary._exceptions import (
    ApiUnavailable,
    AuthenticationFailed,
    LookupFailedError,
)
from promo_bridge.capillary._hooks import ClientHooks, EndpointLabel, fire
from promo_bridge.capillary._limiter import CallBudget
from promo_bridge.capillary._lookup import (
    LOOKUP_PATH,
    Found,
    LookupEndpoint,
    LookupOutcome,
    PromotionStanding,
    Refused,
    interpret_lookup,
    lookup_params,
)
from promo_bridge.capillary._retry import Backoff, retry_after_of
from promo_bridge.capillary._wire import (
    REQUEST_ID_HEADER,
    Answered,
    AuthRefused,
    CallContext,
    CallOutcome,
    RetryLater,
    Settled,
    Split,
    Unavailable,
    build_request,
    check_batch,
    interpret,
    precheck,
)
from promo_bridge.domain._values import value
from promo_bridge.domain.commands import (
    Batch,
    BeforeRequest,
    Command,
    Endpoint,
    IdentifierName,
    PromotionRef,
)
from promo_bridge.domain.outcomes import CommandResult, OutcomeStatus

log = structlog.get_logger("promo_bridge.capillary")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Rng = Callable[[], float]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """The state of one `send`: verdicts by position, requests per command, why some wait."""

    def __init__(self, batch: Batch, before_request: BeforeRequest | None = None) -> None:
        self.batch = batch
        self.before_request = before_request
        self.results: list[CommandResult | None] = [None] * len(batch.commands)
        self.requests = [0] * len(batch.commands)
        self.parked: set[int] = set()
        # Parked after a request that may have been applied: not resent, to be verified.
        self.unsure: set[int] = set()
        self.reason: UnavailableReason | None = None
        # The last failure seen (a status, a code and its message), for the caller's logs and
        # for the outcome of a command that runs out of retries.
        self.last_error: str | None = None
        self.retry_after: float | None = None
        self.refusal: AuthRefused | None = None
        self.auth_error: AuthenticationFailed | None = None

    @property
    def stopped(self) -> bool:
        """Something is pending; later waves must not overtake it."""
        return bool(self.parked)

    @property
    def auth_refused(self) -> bool:
        """The credentials were refused for good during this send."""
        return self.refusal is not None or self.auth_error is not None

    def attempts(self, index: int) -> int:
        """Requests that carried the command, counting earlier sends (`Batch.attempts`)."""
        return self.batch.attempts + self.requests[index]

    def settle(self, index: int, verdict: Settled, request_id: str | None) -> CommandResult:
        """Record a final verdict."""
        result = verdict.to_result(
            command_id=self.batch.commands[index].command_id,
            attempts=self.attempts(index),
            request_id=request_id,
            batch_id=self.batch.batch_id,
        )
        self.results[index] = result
        # An answer ends any doubt about the command's earlier requests.
        self.unsure.discard(index)
        return result

    def park(
        self, indexes: Sequence[int], reason: UnavailableReason, retry_after: float | None
    ) -> None:
        """Leave commands pending because the API is unavailable."""
        self.parked.update(indexes)
        self.reason = reason
        if retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, retry_after)

    def park_unsure(self, indexes: Sequence[int], reason: UnavailableReason) -> None:
        """Leave commands pending, not resent: their request may have been applied."""
        self.park(indexes, reason, None)
        self.unsure.update(indexes)

    def park_refused(
        self,
        indexes: Sequence[int],
        refusal: AuthRefused | None = None,
        error: AuthenticationFailed | None = None,
    ) -> None:
        """Leave commands pending because the credentials were refused."""
        self.parked.update(indexes)
        self.refusal = self.refusal or refusal
        self.auth_error = self.auth_error or error

    def hold(self, indexes: Sequence[int]) -> None:
        """Leave commands pending for the reason already recorded."""
        if self.auth_refused:
            self.parked.update(indexes)
        else:
            self.park(indexes, self.reason or UnavailableReason.SERVER_ERROR, None)

    def conclude(self) -> list[CommandResult]:
        """The results in batch order, or the exception that reports the pending ones."""
        commands = self.batch.commands
        pending = [i for i, result in enumerate(self.results) if result is None]
        if not pending:
            return [result for result in self.results if result is not None]
        completed = [result for result in self.results if result is not None]
        waiting = [commands[i] for i in pending]
        attempts = {commands[i].command_id: self.attempts(i) for i in pending}
        unsure = frozenset(commands[i].command_id for i in pending if i in self.unsure)
        endpoint = self.batch.key.endpoint
        counts = f"{len(waiting)} pending, {len(completed)} completed"
        if unsure:
            counts += f", {len(unsure)} of the pending unsure"
        if self.auth_refused:
            code = self.auth_error.code if self.auth_error else None
            status = self.auth_error.http_status if self.auth_error else None
            if self.refusal is not None:
                code, status = self.refusal.code, self.refusal.http_status
            raise AuthenticationFailed(
                f"Capillary refused the credentials on {endpoint} "
                f"(HTTP {status}, code {code}); {counts}",
                code=code,
                http_status=status,
                completed=completed,
                pending=waiting,
                attempts=attempts,
                unsure=unsure,
            )
        reason = self.reason or UnavailableReason.SERVER_ERROR
        last = f": {self.last_error}" if self.last_error else ""
        raise ApiUnavailable(
            f"Capillary {endpoint} unavailable ({reason}{last}); {counts}",
            reason=reason,
            retry_after=self.retry_after,
            completed=completed,
            pending=waiting,
            attempts=attempts,
            unsure=unsure,
        )


@value
class _Exchange:
    """One HTTP request's outcome, or why it could not be made."""

    outcome: CallOutcome | None
    request_id: str | None = None
    credentials: Credentials | None = None
    auth_error: AuthenticationFailed | None = None
    # No readable answer came, and the request may have been applied all the same.
    maybe_applied: bool = False


@dataclass(frozen=True, slots=True)
class _Reply:
    """One HTTP request: the response or the httpx failure, with the credentials it used."""

    answer: httpx.Response | httpx.RequestError
    credentials: Credentials
    seconds: float


@dataclass(frozen=True, slots=True)
class _GiveUp:
    """No resend: the attempts are spent, or the wait would be longer than allowed."""

    event: str
    retry_after: float | None


def _waves(commands: Sequence[Command], indexes: Sequence[int]) -> list[list[int]]:
    """Group positions so that no wave holds the same customer twice, keeping order."""
    waves: list[list[int]] = []
    seen: dict[str, int] = {}
    for index in indexes:
        value = commands[index].identifier_value
        wave = seen.get(value, 0)
        seen[value] = wave + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(index)
    return waves


def _summary(outcome: CallOutcome) -> dict[str, object]:
    if isinstance(outcome, Unavailable):
        return {"outcome": "unavailable", "reason": outcome.reason.value}
    if isinstance(outcome, Split):
        return {"outcome": "split", "reason": outcome.reason.value}
    counts: dict[str, int] = {}
    for verdict in outcome.verdicts:
        if isinstance(verdict, Settled):
            label = verdict.status.value
        elif isinstance(verdict, RetryLater):
            label = "retry"
        else:
            label = "auth_refused"
        counts[label] = counts.get(label, 0) + 1
    return {"outcome": "answered", **counts}


class CapillaryClient:
    """Sends batches of commands to Capillary's promotion APIs.

    Args:
        config: where and how to call.
        transport: an httpx transport (tests pass `httpx.MockTransport`); the client owns and
            closes it.
        clock: monotonic seconds, for the budget, token expiry and timings.
        sleep: awaits a number of seconds (backoff and budget waits).
        rng: uniform floats in [0, 1), for backoff jitter.
        hooks: observation callbacks for metrics.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        hooks: ClientHooks | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._wall_clock = wall_clock
        self._hooks = hooks or ClientHooks()
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            transport=transport,
            timeout=config.timeout,
            # One connection per in-flight call plus one for a token refresh.
            limits=httpx.Limits(
                max_connections=config.max_in_flight + 1,
                max_keepalive_connections=config.max_in_flight + 1,
            ),
            headers={"User-Agent": config.user_agent, "Accept": "application/json"},
            follow_redirects=False,
            verify=config.tls_context(),
            # Environment proxies would bypass an injected transport.
            trust_env=config.trust_env and transport is None,
        )
        self._auth: Authenticator
        if isinstance(config.auth, BasicAuth):
            self._auth = BasicAuthenticator(config.auth)
        else:
            self._auth = OAuthAuthenticator(
                self._http,
                config.auth,
                margin_s=config.token_refresh_margin_s,
                clock=clock,
                wall_clock=wall_clock,
                hooks=self._hooks,
            )
        self._budgets = {
            endpoint: CallBudget(
                config.calls_per_minute[endpoint],
                config.budget_window_s,
                burst=config.budget_burst,
                clock=clock,
                sleep=sleep,
                on_wait=self._throttle_observer(endpoint),
            )
            for endpoint in Endpoint
        }
        self._lookup_budget = CallBudget(
            config.lookup_calls_per_minute,
            config.budget_window_s,
            burst=config.budget_burst,
            clock=clock,
            sleep=sleep,
            on_wait=self._throttle_observer(LookupEndpoint.PROMOTION_DATA),
        )
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._backoff = Backoff(config.backoff_base_s, config.backoff_cap_s)
        self._closed = False

    def __repr__(self) -> str:
        return f"CapillaryClient(base_url={self._config.base_url!r}, auth={self._config.auth.kind})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release connections; the client cannot send afterwards."""
        if self._closed:
            return
        self._closed = True
        await self._auth.aclose()
        await self._http.aclose()

    def budget_use(self) -> dict[str, tuple[int, int]]:
        """Per endpoint: calls counted in the current budget window, and the limit."""
        budgets = {str(e.value): b for e, b in self._budgets.items()}
        budgets[LookupEndpoint.PROMOTION_DATA.value] = self._lookup_budget
        return {name: (budget.used(), budget.calls) for name, budget in budgets.items()}

    def set_budget_share(self, assigned: int, total: int) -> dict[str, int]:
        """Take `assigned` / `total` of the configured budgets; the calls per window per endpoint.

        The configured figures are the org's (every replica together). Each endpoint gets
        floor(figure x assigned / total), so the replicas' shares never add up to more than the
        figure; 0 takes no call until the share grows (waiting calls then go at once). Calls
        already taken keep counting in their window.
        """
        if assigned < 0 or total < 0 or assigned > total:
            raise ValueError(f"a share is 0 <= assigned <= total, not {assigned}/{total}")
        config = self._config

        def share(calls: int) -> int:
            return calls * assigned // total if total else 0

        for endpoint, budget in self._budgets.items():
            budget.resize(share(config.calls_per_minute[endpoint]))
        self._lookup_budget.resize(share(config.lookup_calls_per_minute))
        return {name: calls for name, (_, calls) in self.budget_use().items()}

    async def authenticate(self) -> None:
        """Prove the credentials now, without a side effect (a readiness probe).

        OAuth fetches a fresh token; Basic cannot be checked without a real call and returns.
        Raises AuthenticationFailed or ApiUnavailable (with nothing completed or pending).
        """
        self._check_open()
        await self._auth.verify()

    async def send(
        self, batch: Batch, *, before_request: BeforeRequest | None = None
    ) -> list[CommandResult]:
        """Deliver every command of `batch`; one result per command, in batch order.

        `before_request` is awaited with the commands of each request once the request has
        its place in the budget and an in-flight slot, just before it leaves (the caller makes
        its intents durable there: a batch that waits for the budget has sent nothing).

        Raises:
            ApiUnavailable: some commands stayed retryable past the attempts; `completed` has
                the results of the others, `pending` the commands to resend later.
            AuthenticationFailed: the credentials were refused (after one token refresh);
                `completed` and `pending` as above.
            ValueError: the batch mixes batch keys or repeats a command (a caller bug).
        """
        self._check_open()
        check_batch(batch.key, batch.commands)
        run = _Run(batch, before_request)
        sendable: list[int] = []
        for index, command in enumerate(batch.commands):
            verdict = precheck(batch.key, command)
            if verdict is None:
                sendable.append(index)
            else:
                run.settle(index, verdict, None)
        limit = self._config.batch_limits[batch.key.endpoint]
        for wave in _waves(batch.commands, sendable):
            if run.stopped:
                run.hold(wave)
                continue
            calls = [wave[start : start + limit] for start in range(0, len(wave), limit)]
            await asyncio.gather(*(self._deliver(run, call) for call in calls))
        return run.conclude()

    async def lookup_promotion(
        self,
        identifier_name: IdentifierName,
        identifier_value: str,
        source: str,
        promotion: PromotionRef,
    ) -> PromotionStanding | None:
        """Where one customer stands in one promotion (`GET .../lookup/promotionData`).

        Read-only: network errors, timeouts, 429, 5xx, retryable codes and malformed bodies are
        retried up to `max_attempts` requests, refused credentials refresh the token once.

        Returns:
            The standing, or None when the API does not know the customer (code 8015) or the
            customer holds no entry for the promotion.

        Raises:
            ApiUnavailable: still unavailable after the attempts (nothing completed or pending).
            AuthenticationFailed: the credentials were refused (after one token refresh).
            LookupFailedError: the API refused the lookup itself (a code such as 1101 or
                11013), or its answer cannot tell the standing of this promotion.
        """
        self._check_open()
        label = LookupEndpoint.PROMOTION_DATA
        params = lookup_params(identifier_name, identifier_value, source, promotion)
        counted = 0
        refreshed = False
        while True:
            counted += 1
            outcome, credentials = await self._lookup_once(params, promotion, counted)
            if isinstance(outcome, Found):
                return outcome.standing
            if isinstance(outcome, Refused):
                log.error(
                    "capillary_lookup_failed",
                    endpoint=label.value,
                    promotion=promotion.label,
                    http_status=outcome.http_status,
                    code=outcome.code,
                    detail=outcome.detail,
                )
                raise LookupFailedError(
                    f"Capillary {label} answered HTTP {outcome.http_status}: {outcome.detail}",
                    code=outcome.code,
                    http_status=outcome.http_status,
                )
            if isinstance(outcome, AuthRefused):
                if not refreshed and credentials is not None and self._auth.invalidate(credentials):
                    # One refresh per lookup, outside the attempt bound.
                    refreshed = True
                    counted -= 1
                    continue
                log.error(
                    "capillary_auth_refused",
                    endpoint=label.value,
                    http_status=outcome.http_status,
                    code=outcome.code,
                )
                raise AuthenticationFailed(
                    f"Capillary refused the credentials on {label} "
                    f"(HTTP {outcome.http_status}, code {outcome.code})",
                    code=outcome.code,
                    http_status=outcome.http_status,
                )
            wait = self._resend_wait(counted, outcome.retry_after)
            if isinstance(wait, _GiveUp):
                log.warning(
                    wait.event,
                    endpoint=label.value,
                    reason=outcome.reason.value,
                    attempts=counted,
                    wait_s=wait.retry_after,
                )
                raise ApiUnavailable(
                    f"Capillary {label} unavailable ({outcome.reason}) after {counted} attempts",
                    reason=outcome.reason,
                    retry_after=wait.retry_after,
                )
            await self._before_resend(label, outcome.reason, wait, attempt=counted)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("CapillaryClient is closed")

    def _throttle_observer(self, endpoint: EndpointLabel) -> Callable[[float], None]:
        def observe(seconds: float) -> None:
            fire(self._hooks.on_throttle_wait, endpoint, seconds)

        return observe

    async def _deliver(self, run: _Run, todo: list[int]) -> None:
        """Deliver one call (positions `todo`) until every customer settles or must wait."""
        endpoint = run.batch.key.endpoint
        counted = 0
        refreshed = False
        while todo:
            if run.auth_refused:
                # Another call of this send had the credentials refused: do not insist.
                run.hold(todo)
                return
            counted += 1
            exchange = await self._exchange(run, todo, counted)
            outcome = exchange.outcome
            if exchange.auth_error is not None or outcome is None:
                run.park_refused(todo, error=exchange.auth_error)
                return
            if isinstance(outcome, Split):
                await self._split(run, todo, outcome)
                return
            retry: list[int]
            refused: list[tuple[int, AuthRefused]] = []
            retry_after: float | None = None
            if isinstance(outcome, Unavailable):
                if (
                    exchange.maybe_applied
                    and run.batch.key.action in self._config.verify_unsure_actions
                ):
                    self._park_unsure(run, todo, outcome, counted)
                    return
                retry, reason, retry_after = list(todo), outcome.reason, outcome.retry_after
                run.last_error = outcome.detail or None
            else:
                retry, refused = self._record(run, todo, outcome, exchange.request_id)
                reason = UnavailableReason.RETRYABLE_CODE
            if refused:
                indexes = sorted(retry + [index for index, _ in refused])
                used = exchange.credentials
                if not refreshed and used is not None and self._auth.invalidate(used):
                    # One refresh per call, outside the attempt bound.
                    refreshed = True
                    counted -= 1
                    todo = indexes
                    continue
                run.park_refused(indexes, refusal=refused[0][1])
                log.error(
                    "capillary_auth_refused",
                    endpoint=endpoint.value,
                    batch_id=run.batch.batch_id,
                    http_status=refused[0][1].http_status,
                    code=refused[0][1].code,
                )
                return
            if not retry or not await self._backoff_or_park(
                run, retry, counted, reason, retry_after
            ):
                return
            todo = retry

    def _park_unsure(self, run: _Run, todo: list[int], outcome: Unavailable, counted: int) -> None:
        run.park_unsure(todo, outcome.reason)
        log.warning(
            "capillary_answer_lost",
            endpoint=run.batch.key.endpoint.value,
            batch_id=run.batch.batch_id,
            action=run.batch.key.action.value,
            reason=outcome.reason.value,
            # The reason alone does not tell a 504 from a 503.
            detail=outcome.detail,
            customers=len(todo),
            attempt=counted,
        )

    async def _backoff_or_park(
        self,
        run: _Run,
        retry: list[int],
        counted: int,
        reason: UnavailableReason,
        retry_after: float | None,
    ) -> bool:
        """Wait before resending `retry`; False (and parked) when no resend is allowed."""
        wait = self._resend_wait(counted, retry_after)
        if isinstance(wait, _GiveUp):
            run.park(retry, reason, wait.retry_after)
            log.warning(
                wait.event,
                endpoint=run.batch.key.endpoint.value,
                batch_id=run.batch.batch_id,
                reason=reason.value,
                customers=len(retry),
                attempts=counted,
                wait_s=wait.retry_after,
            )
            return False
        await self._before_resend(
            run.batch.key.endpoint,
            reason,
            wait,
            attempt=counted,
            batch_id=run.batch.batch_id,
            customers=len(retry),
        )
        return True

    def _resend_wait(self, counted: int, retry_after: float | None) -> float | _GiveUp:
        """The wait before the next request, after `counted` requests; or why there is none."""
        if counted >= self._config.max_attempts:
            return _GiveUp("capillary_attempts_exhausted", retry_after)
        delay = self._backoff.delay(counted, self._rng, retry_after)
        if delay > self._config.max_retry_wait_s:
            # Holding the batch (and an attempt) that long helps no one: report the wait.
            return _GiveUp("capillary_retry_wait_too_long", delay)
        return delay

    async def _before_resend(
        self,
        endpoint: EndpointLabel,
        reason: UnavailableReason,
        delay: float,
        *,
        attempt: int,
        **fields: object,
    ) -> None:
        fire(self._hooks.on_retry, endpoint, reason)
        log.info(
            "capillary_retry",
            endpoint=endpoint.value,
            reason=reason.value,
            attempt=attempt,
            wait_s=round(delay, 3),
            **fields,
        )
        await self._sleep(delay)

    def _record(
        self, run: _Run, todo: list[int], outcome: Answered, request_id: str | None
    ) -> tuple[list[int], list[tuple[int, AuthRefused]]]:
        """Keep the final verdicts; return who must be retried and who was refused."""
        endpoint = run.batch.key.endpoint
        retry: list[int] = []
        refused: list[tuple[int, AuthRefused]] = []
        for index, verdict in zip(todo, outcome.verdicts, strict=True):
            if isinstance(verdict, Settled):
                result = run.settle(index, verdict, request_id)
                if verdict.unknown_code:
                    fire(self._hooks.on_unknown_code, endpoint, verdict.error_code)
                if result.status is OutcomeStatus.FAILED:
                    log.error(
                        "capillary_command_failed",
                        endpoint=endpoint.value,
                        batch_id=run.batch.batch_id,
                        command_id=result.command_id,
                        request_id=request_id,
                        detail=result.error_message,
                    )
            elif isinstance(verdict, RetryLater):
                retry.append(index)
                run.last_error = f"code {verdict.code}: {verdict.message}"
            else:
                refused.append((index, verdict))
        return retry, refused

    async def _split(self, run: _Run, todo: list[int], outcome: Split) -> None:
        endpoint = run.batch.key.endpoint
        fire(self._hooks.on_split, endpoint, outcome.reason)
        log.warning(
            "capillary_split",
            endpoint=endpoint.value,
            batch_id=run.batch.batch_id,
            reason=outcome.reason.value,
            detail=outcome.detail,
            customers=len(todo),
        )
        half = len(todo) // 2
        await asyncio.gather(self._deliver(run, todo[:half]), self._deliver(run, todo[half:]))

    async def _exchange(self, run: _Run, todo: list[int], attempt: int) -> _Exchange:
        """Make one request for positions `todo` (budget, in-flight slot, credentials)."""
        key = run.batch.key
        endpoint = key.endpoint
        commands = [run.batch.commands[index] for index in todo]
        request = build_request(
            key,
            commands,
            unenroll_prefix=self._config.unenroll_path_prefix,
            revoke_direct_earn_bulk_action=self._config.revoke_direct_earn_bulk_action,
        )
        budget = self._budgets[endpoint]

        def count() -> None:
            for index in todo:
                run.requests[index] += 1

        before = None
        if run.before_request is not None:
            hook = run.before_request

            async def before() -> None:
                await hook(commands)

        try:
            reply = await self._request(
                budget, "POST", request.path, on_send=count, before=before, json=request.body
            )
        except AuthenticationFailed as exc:
            return _Exchange(None, auth_error=exc)
        except ApiUnavailable as exc:
            return _Exchange(Unavailable(exc.reason, exc.retry_after, str(exc)))
        response = reply.answer
        if isinstance(response, httpx.RequestError):
            return self._failed_exchange(run, todo, attempt=attempt, reply=reply, exc=response)
        seconds = reply.seconds
        request_id = response.headers.get(REQUEST_ID_HEADER)
        retry_after = retry_after_of(response.headers, wall_clock=self._wall_clock)
        context = CallContext(
            endpoint=endpoint,
            action=key.action,
            identifier_name=key.identifier_name,
            commands=commands,
            accepted_statuses=self._config.accepted_statuses,
            not_enrolled_codes=self._config.unenroll_not_enrolled_codes,
        )
        outcome = interpret(context, response.status_code, response.content, retry_after)
        if isinstance(outcome, Unavailable) and outcome.retry_after is not None:
            # Everyone calling this endpoint waits, not only this call.
            budget.defer(self._clock() + outcome.retry_after)
        fire(self._hooks.on_request, endpoint, response.status_code, seconds, request_id)
        log.info(
            "capillary_request",
            endpoint=endpoint.value,
            batch_id=run.batch.batch_id,
            http_status=response.status_code,
            seconds=round(seconds, 4),
            request_id=request_id,
            customers=len(todo),
            attempt=attempt,
            **_summary(outcome),
        )
        maybe_applied = isinstance(outcome, Unavailable) and outcome.maybe_applied
        return _Exchange(outcome, request_id, reply.credentials, maybe_applied=maybe_applied)

    def _failed_exchange(
        self,
        run: _Run,
        todo: list[int],
        *,
        attempt: int,
        reply: _Reply,
        exc: httpx.RequestError,
    ) -> _Exchange:
        endpoint = run.batch.key.endpoint
        reason = request_error_reason(exc)
        fire(self._hooks.on_request, endpoint, None, reply.seconds, None)
        log.warning(
            "capillary_request_failed",
            endpoint=endpoint.value,
            batch_id=run.batch.batch_id,
            error=type(exc).__name__,
            reason=reason.value,
            seconds=round(reply.seconds, 4),
            customers=len(todo),
            attempt=attempt,
        )
        return _Exchange(
            Unavailable(reason, None, type(exc).__name__),
            None,
            reply.credentials,
            maybe_applied=reason in MAYBE_APPLIED_REASONS,
        )

    async def _lookup_once(
        self, params: Mapping[str, str], promotion: PromotionRef, attempt: int
    ) -> tuple[LookupOutcome, Credentials | None]:
        """Make one lookup request; its outcome and the credentials it used."""
        label = LookupEndpoint.PROMOTION_DATA
        try:
            reply = await self._request(
                self._lookup_budget, "GET", LOOKUP_PATH, on_send=lambda: None, params=params
            )
        except ApiUnavailable as exc:
            # The token request failed: nothing was sent, so it counts as an attempt.
            return Unavailable(exc.reason, exc.retry_after, str(exc)), None
        response = reply.answer
        if isinstance(response, httpx.RequestError):
            reason = request_error_reason(response)
            fire(self._hooks.on_request, label, None, reply.seconds, None)
            log.warning(
                "capillary_request_failed",
                endpoint=label.value,
                error=type(response).__name__,
                reason=reason.value,
                seconds=round(reply.seconds, 4),
                attempt=attempt,
            )
            return Unavailable(reason, None, type(response).__name__), reply.credentials
        request_id = response.headers.get(REQUEST_ID_HEADER)
        retry_after = retry_after_of(response.headers, wall_clock=self._wall_clock)
        outcome = interpret_lookup(promotion, response.status_code, response.content, retry_after)
        if isinstance(outcome, Unavailable) and outcome.retry_after is not None:
            self._lookup_budget.defer(self._clock() + outcome.retry_after)
        fire(self._hooks.on_request, label, response.status_code, reply.seconds, request_id)
        log.info(
            "capillary_request",
            endpoint=label.value,
            promotion=promotion.label,
            http_status=response.status_code,
            seconds=round(reply.seconds, 4),
            request_id=request_id,
            attempt=attempt,
            outcome=type(outcome).__name__.lower(),
        )
        return outcome, reply.credentials

    async def _request(
        self,
        budget: CallBudget,
        method: str,
        path: str,
        *,
        on_send: Callable[[], None],
        before: Callable[[], Awaitable[None]] | None = None,
        json: object = None,
        params: Mapping[str, str] | None = None,
    ) -> _Reply:
        """One request within `budget` and an in-flight slot, with current credentials.

        `before` is awaited, then `on_send` runs, once the request is about to leave (if
        `before` fails, nothing was sent and the budget place is given back). httpx failures
        are returned, not raised: they are translated by the caller, where they enter. Raises
        AuthenticationFailed or ApiUnavailable when no credentials can be had (nothing sent).
        """
        slot = await budget.acquire()
        try:
            async with self._in_flight:
                try:
                    credentials = await self._auth.credentials()
                    if before is not None:
                        await before()
                except BaseException:
                    slot.cancel()
                    raise
                on_send()
                headers = dict(credentials.headers)
                content = None
                if json is not None:
                    # orjson: a 100-customer body in a tenth of the time httpx's json.dumps takes.
                    content = orjson.dumps(json)
                    headers["Content-Type"] = "application/json"
                started = self._clock()
                try:
                    response = await self._http.request(
                        method, path, content=content, params=params, headers=headers
                    )
                except httpx.RequestError as exc:
                    return _Reply(exc, credentials, self._clock() - started)
        finally:
            slot.release()
        return _Reply(response, credentials, self._clock() - started)
