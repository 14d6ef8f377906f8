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
     it after a backoff that honours Retry-After, up to `max_attempts` requests;
   - an ambiguous answer splits the call in halves, each resent as a call of its own;
   - refused credentials refresh the OAuth token once and resend; refused again, they stop.
4. If every command settled, `send` returns the results in batch order. Otherwise it raises
   `ApiUnavailable` or `AuthenticationFailed` carrying the settled results (`completed`, to be
   published) and the unsettled commands (`pending`, to be kept and resent later): an API
   that is merely unavailable never produces a failure outcome, and a batch that partly went
   through still delivers its successes.

Resending after a timeout or a broken connection may repeat a side effect the API already
applied (the bulk calls take no idempotency key); the `on_retry` reason (`timeout`,
`network_error` versus `connect_error`) tells such resends apart.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx
import structlog

from promo_bridge.capillary._auth import (
    Authenticator,
    BasicAuthenticator,
    Credentials,
    OAuthAuthenticator,
    request_error_reason,
)
from promo_bridge.capillary._config import BasicAuth, ClientConfig
from promo_bridge.capillary._errors import UnavailableReason
from promo_bridge.capillary._exceptions import ApiUnavailable, AuthenticationFailed
from promo_bridge.capillary._hooks import ClientHooks, fire
from promo_bridge.capillary._limiter import CallBudget
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
from promo_bridge.domain.commands import Batch, Command, Endpoint
from promo_bridge.domain.outcomes import CommandResult, OutcomeStatus

log = structlog.get_logger("promo_bridge.capillary")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Rng = Callable[[], float]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """The state of one `send`: verdicts by position, requests per command, why some wait."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.results: list[CommandResult | None] = [None] * len(batch.commands)
        self.requests = [0] * len(batch.commands)
        self.parked: set[int] = set()
        self.reason: UnavailableReason | None = None
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
        return result

    def park(
        self, indexes: Sequence[int], reason: UnavailableReason, retry_after: float | None
    ) -> None:
        """Leave commands pending because the API is unavailable."""
        self.parked.update(indexes)
        self.reason = reason
        if retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, retry_after)

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
        endpoint = self.batch.key.endpoint
        counts = f"{len(waiting)} pending, {len(completed)} completed"
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
            )
        reason = self.reason or UnavailableReason.SERVER_ERROR
        raise ApiUnavailable(
            f"Capillary {endpoint} unavailable ({reason}); {counts}",
            reason=reason,
            retry_after=self.retry_after,
            completed=completed,
            pending=waiting,
            attempts=attempts,
        )


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One HTTP request's outcome, or why it could not be made."""

    outcome: CallOutcome | None
    request_id: str | None = None
    credentials: Credentials | None = None
    auth_error: AuthenticationFailed | None = None


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

    async def authenticate(self) -> None:
        """Prove the credentials now, without a side effect (a readiness probe).

        OAuth fetches a fresh token; Basic cannot be checked without a real call and returns.
        Raises AuthenticationFailed or ApiUnavailable (with nothing completed or pending).
        """
        self._check_open()
        await self._auth.verify()

    async def send(self, batch: Batch) -> list[CommandResult]:
        """Deliver every command of `batch`; one result per command, in batch order.

        Raises:
            ApiUnavailable: some commands stayed retryable past the attempts; `completed` has
                the results of the others, `pending` the commands to resend later.
            AuthenticationFailed: the credentials were refused (after one token refresh);
                `completed` and `pending` as above.
            ValueError: the batch mixes batch keys or repeats a command (a caller bug).
        """
        self._check_open()
        check_batch(batch.key, batch.commands)
        run = _Run(batch)
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

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("CapillaryClient is closed")

    def _throttle_observer(self, endpoint: Endpoint) -> Callable[[float], None]:
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
                retry, reason, retry_after = list(todo), outcome.reason, outcome.retry_after
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
            if not retry:
                return
            if not await self._backoff_or_park(run, retry, counted, reason, retry_after):
                return
            todo = retry

    async def _backoff_or_park(
        self,
        run: _Run,
        retry: list[int],
        counted: int,
        reason: UnavailableReason,
        retry_after: float | None,
    ) -> bool:
        """Wait before resending `retry`; False (and parked) when no resend is allowed."""
        endpoint = run.batch.key.endpoint
        config = self._config
        if counted >= config.max_attempts:
            run.park(retry, reason, retry_after)
            log.warning(
                "capillary_attempts_exhausted",
                endpoint=endpoint.value,
                batch_id=run.batch.batch_id,
                reason=reason.value,
                customers=len(retry),
                attempts=counted,
            )
            return False
        delay = self._backoff.delay(counted, self._rng, retry_after)
        if delay > config.max_retry_wait_s:
            # Holding the batch (and an attempt) that long helps no one: report the wait.
            run.park(retry, reason, delay)
            log.warning(
                "capillary_retry_wait_too_long",
                endpoint=endpoint.value,
                batch_id=run.batch.batch_id,
                reason=reason.value,
                wait_s=delay,
            )
            return False
        fire(self._hooks.on_retry, endpoint, reason)
        log.info(
            "capillary_retry",
            endpoint=endpoint.value,
            batch_id=run.batch.batch_id,
            reason=reason.value,
            customers=len(retry),
            attempt=counted,
            wait_s=round(delay, 3),
        )
        await self._sleep(delay)
        return True

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
        slot = await budget.acquire()
        try:
            async with self._in_flight:
                try:
                    credentials = await self._auth.credentials()
                except AuthenticationFailed as exc:
                    slot.cancel()
                    return _Exchange(None, auth_error=exc)
                except ApiUnavailable as exc:
                    slot.cancel()
                    return _Exchange(Unavailable(exc.reason, exc.retry_after, str(exc)))
                for index in todo:
                    run.requests[index] += 1
                started = self._clock()
                try:
                    response = await self._http.post(
                        request.path, json=request.body, headers=dict(credentials.headers)
                    )
                except httpx.RequestError as exc:
                    # Translated here, where httpx enters; never re-raised.
                    return self._failed_exchange(
                        run,
                        todo,
                        attempt=attempt,
                        exc=exc,
                        started=started,
                        credentials=credentials,
                    )
        finally:
            slot.release()
        seconds = self._clock() - started
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
        return _Exchange(outcome, request_id, credentials)

    def _failed_exchange(
        self,
        run: _Run,
        todo: list[int],
        *,
        attempt: int,
        exc: httpx.RequestError,
        started: float,
        credentials: Credentials,
    ) -> _Exchange:
        endpoint = run.batch.key.endpoint
        seconds = self._clock() - started
        reason = request_error_reason(exc)
        fire(self._hooks.on_request, endpoint, None, seconds, None)
        log.warning(
            "capillary_request_failed",
            endpoint=endpoint.value,
            batch_id=run.batch.batch_id,
            error=type(exc).__name__,
            reason=reason.value,
            seconds=round(seconds, 4),
            customers=len(todo),
            attempt=attempt,
        )
        return _Exchange(Unavailable(reason, None, type(exc).__name__), None, credentials)
