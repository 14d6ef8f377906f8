"""The Simulator: org state, auth, faults, ledger and call log behind one Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from promo_bridge.simulator import _admin, _calls, _codes
from promo_bridge.simulator._asgi import REQUEST_ID_KEY, DropConnection, RequestIdAndDrop
from promo_bridge.simulator._auth import Authenticator, Credentials
from promo_bridge.simulator._bulk import (
    ENROL_AND_EARN,
    REVOKE_DIRECT_EARN,
    REVOKE_ENROL_AND_EARN,
    BulkEndpoints,
)
from promo_bridge.simulator._calls import CallLog, CallRecord
from promo_bridge.simulator._catalogue import Catalogue, default_catalogue
from promo_bridge.simulator._faults import FaultInjector, Faults
from promo_bridge.simulator._ledger import Ledger
from promo_bridge.simulator._lookup import lookup
from promo_bridge.simulator._options import ApiOptions
from promo_bridge.simulator._state import OrgState
from promo_bridge.simulator._targets import TargetEndpoints

TOKEN_ENDPOINT: Final = "token"  # noqa: S105 - an endpoint name
LOOKUP_ENDPOINT: Final = "promotionData"
UNENROLL_ENDPOINT: Final = "unEnroll"
JSON: Final = "application/json"


def json_response(status: int, body: object, headers: Mapping[str, str] | None = None) -> Response:
    """A compact JSON response."""
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content, status_code=status, media_type=JSON, headers=headers)


@dataclass(slots=True)
class _Answer:
    """What an endpoint's logic produced, plus what the call log wants to know."""

    status: int
    body: object
    bulk_action: str | None = None
    customers: int = 0
    failures: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class _Process(Protocol):
    """An endpoint's logic; runs without awaiting, so a call's state change is atomic."""

    def __call__(
        self, raw: bytes, request: Request, request_id: str, now: float, fail: bool
    ) -> _Answer: ...


class Simulator:
    """A stateful Capillary loyalty-promotion API with fault injection.

    ``app`` is the ASGI application (serve it with ``serve()`` or drive it in-process with
    ``httpx.ASGITransport``). Everything else is for tests and tools: ``ledger`` (side
    effects), ``calls`` (call log), ``stats``, ``set_faults``, ``set_credentials``,
    ``expire_tokens``, ``reset``. Use it from the event loop that serves it; the ledger and the
    call log may also be read from other threads.
    """

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        credentials: Credentials | None = None,
        faults: Faults | None = None,
        options: ApiOptions | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalogue = catalogue if catalogue is not None else default_catalogue()
        self.options = options if options is not None else ApiOptions()
        self._initial_credentials = credentials if credentials is not None else Credentials()
        self._initial_faults = faults if faults is not None else Faults()
        self._clock = clock
        self._monotonic = monotonic
        self.ledger = Ledger(self.options.max_ledger_entries)
        self._calls = CallLog(self.options.max_call_records)
        self._auth = Authenticator(self._initial_credentials, clock)
        self._injector = FaultInjector(self._initial_faults, monotonic)
        self._auth.force_expiries(self._initial_faults.expired_tokens)
        # One event per held request, created in the loop that serves it: a simulator may be
        # driven from several event loops over its life (one per test), an Event from one.
        self._held: set[asyncio.Event] = set()
        self._stopping = False
        self._state = OrgState(self.catalogue)
        self._bulk = BulkEndpoints(
            self._state, self.ledger, self.options, self._injector.entry_fails
        )
        self._targets = TargetEndpoints(self._state, self.ledger, self.options.target_error_status)
        self.app: ASGIApp = RequestIdAndDrop(self._build_app())

    # -- public surface for tests and tools ---------------------------------------------------

    @property
    def calls(self) -> list[CallRecord]:
        """Retained call records, oldest first."""
        return self._calls.records()

    def calls_since(self, seq: int = 0, endpoint: str | None = None) -> list[CallRecord]:
        """Call records after sequence number ``seq``, optionally of one endpoint."""
        return self._calls.records(since=seq, endpoint=endpoint)

    @property
    def stats(self) -> dict[str, Any]:
        """Call counters (incl. token requests), ledger totals and fault state."""
        return {
            **self._calls.stats(),
            "effects": self.ledger.totals(),
            "known_customers": self._state.customer_count(),
            "script_left": self._injector.script_left,
            "forced_token_expiries_left": self._auth.forced_expiries_left,
        }

    @property
    def state(self) -> OrgState:
        """The org's current state (read it; change it through the API)."""
        return self._state

    @property
    def credentials(self) -> Credentials:
        """Credentials currently accepted."""
        return self._auth.credentials

    def set_credentials(
        self, credentials: Credentials | None = None, **changes: Any
    ) -> Credentials:
        """Replace the accepted credentials, or change some fields; takes effect at once."""
        base = credentials if credentials is not None else self._auth.credentials
        self._auth.credentials = base.with_changes(changes)
        return self._auth.credentials

    @property
    def faults(self) -> Faults:
        """Faults currently injected."""
        return self._injector.faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults, or change some fields (merged into the current ones)."""
        base = faults if faults is not None else self._injector.faults
        updated = base.merged(changes) if changes else base
        self._injector.configure(updated, reseed="seed" in changes or faults is not None)
        # Only a new count restarts the forced expiries; other changes leave them running down.
        if faults is not None or "expired_tokens" in changes:
            self._auth.force_expiries(updated.expired_tokens)
        return updated

    def expire_tokens(self) -> None:
        """Every token issued so far answers 498 from now on."""
        self._auth.expire_issued_tokens()

    def enrol_in_target(self, customer_id: int, target_group_id: int, target_id: int) -> None:
        """Put a customer (back) into a target, e.g. to un-enrol them again."""
        target = self._state.target(target_group_id, target_id)
        if target is None:
            raise KeyError(f"no target {target_group_id}/{target_id} in the catalogue")
        self._state.set_in_target(customer_id, target, enrolled=True)

    def reset(
        self,
        *,
        state: bool = True,
        faults: bool = True,
        credentials: bool = True,
        calls: bool = True,
    ) -> None:
        """Back to the catalogue, the initial faults and credentials, empty ledger and log."""
        if state:
            self._state = OrgState(self.catalogue)
            self._bulk = BulkEndpoints(
                self._state, self.ledger, self.options, self._injector.entry_fails
            )
            self._targets = TargetEndpoints(
                self._state, self.ledger, self.options.target_error_status
            )
            self.ledger.clear()
        if faults:
            self._injector.configure(self._initial_faults, reseed=True)
            self._injector.limiter.clear()
            self._auth.force_expiries(self._initial_faults.expired_tokens)
        if credentials:
            self._auth.credentials = self._initial_credentials
        if calls:
            self._calls.clear()

    def client(
        self, *, auth: bool = True, base_url: str = "http://capillary.sim"
    ) -> httpx.AsyncClient:
        """An in-process httpx client (ASGITransport), with Basic auth unless ``auth=False``."""
        headers = {"Authorization": self.credentials.basic_header()} if auth else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=base_url, headers=headers
        )

    def begin_shutdown(self) -> None:
        """Cut short held requests (timeout faults) so the server can stop promptly."""
        self._stopping = True
        for event in self._held:
            event.set()

    def end_shutdown(self) -> None:
        """Allow held requests again (the simulator is being served anew)."""
        self._stopping = False

    # -- the app --------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        prefix = self.options.target_path_prefix
        unenroll = "/targetGroups/{group}/targets/{target}/unEnroll"
        routes = [
            Route("/v2/promotion/bulk/enrolAndEarn", self._enrol_and_earn, methods=["POST"]),
            Route(
                "/v2/promotion/bulk/revokeEnrolAndEarn",
                self._revoke_enrol_and_earn,
                methods=["POST"],
            ),
            Route(
                "/v2/promotion/bulk/revokeDirectEarn", self._revoke_direct_earn, methods=["POST"]
            ),
            Route("/v3/oauth/token/generate", self._token, methods=["POST"]),
            Route("/v2/customers/lookup/promotionData", self._lookup, methods=["GET"]),
            Route(unenroll, self._unenroll, methods=["POST"]),
            *_admin.routes(self),
        ]
        if prefix:
            routes.append(Route(prefix + unenroll, self._unenroll, methods=["POST"]))

        async def not_found(request: Request, exc: Exception) -> Response:
            return json_response(404, {"code": 404, "message": "Not Found"})

        async def not_allowed(request: Request, exc: Exception) -> Response:
            return json_response(405, {"code": 405, "message": "Method Not Allowed"})

        return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})

    async def _enrol_and_earn(self, request: Request) -> Response:
        return await self._api(request, ENROL_AND_EARN, self._bulk_process(ENROL_AND_EARN))

    async def _revoke_enrol_and_earn(self, request: Request) -> Response:
        return await self._api(
            request, REVOKE_ENROL_AND_EARN, self._bulk_process(REVOKE_ENROL_AND_EARN)
        )

    async def _revoke_direct_earn(self, request: Request) -> Response:
        return await self._api(request, REVOKE_DIRECT_EARN, self._bulk_process(REVOKE_DIRECT_EARN))

    def _bulk_process(self, endpoint: str) -> _Process:
        def process(
            raw: bytes, request: Request, request_id: str, now: float, fail: bool
        ) -> _Answer:
            try:
                body = json.loads(raw)
            except ValueError:
                answer = self._bulk.malformed(endpoint)
            else:
                answer = self._bulk.handle(
                    endpoint, body, request_id=request_id, now=now, fail_all_entries=fail
                )
            return _Answer(
                answer.status, answer.body, answer.bulk_action, answer.customers, answer.failures
            )

        return process

    async def _unenroll(self, request: Request) -> Response:
        def process(
            raw: bytes, request: Request, request_id: str, now: float, fail: bool
        ) -> _Answer:
            try:
                body: object = json.loads(raw)
            except ValueError:
                body = None
            # An injected 8896 has no meaning here; the target API has no per-entry errors.
            answer = self._targets.unenroll(
                request.path_params["group"],
                request.path_params["target"],
                body,
                request_id=request_id,
                now=now,
            )
            return _Answer(answer.status, answer.body, None, 1, int(answer.failed))

        return await self._api(request, UNENROLL_ENDPOINT, process)

    async def _lookup(self, request: Request) -> Response:
        def process(
            raw: bytes, request: Request, request_id: str, now: float, fail: bool
        ) -> _Answer:
            answer = lookup(self._state, request.query_params)
            return _Answer(answer.status, answer.body, None, 1, int(answer.status != 200))

        return await self._api(request, LOOKUP_ENDPOINT, process)

    async def _token(self, request: Request) -> Response:
        def process(
            raw: bytes, request: Request, request_id: str, now: float, fail: bool
        ) -> _Answer:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            token = (
                self._auth.issue(body.get("key"), body.get("secret"))
                if isinstance(body, dict)
                else None
            )
            if token is None:
                error = {
                    "code": _codes.OAUTH_INVALID_CLIENT,
                    "message": _codes.message(_codes.OAUTH_INVALID_CLIENT),
                }
                return _Answer(401, {"data": None, "errors": [error]}, failures=1)
            return _Answer(200, {"data": token, "errors": None})

        return await self._api(request, TOKEN_ENDPOINT, process, authenticate=False)

    # -- the pipeline every API call goes through ----------------------------------------------

    # Each early return is one documented way a call ends (401, 429, injected fault, drop ...).
    async def _api(  # noqa: PLR0911
        self, request: Request, endpoint: str, process: _Process, *, authenticate: bool = True
    ) -> Response:
        started = self._monotonic()
        seq = self._calls.next_seq()
        request_id: str = request.scope[REQUEST_ID_KEY]
        injector = self._injector

        def log(
            status: int | None,
            outcome: str,
            *,
            answer: _Answer | None = None,
            processed: bool = False,
            scheme: str | None = None,
        ) -> None:
            self._calls.add(
                CallRecord(
                    seq=seq,
                    request_id=request_id,
                    at=self._clock(),
                    method=request.method,
                    path=request.url.path,
                    endpoint=endpoint,
                    bulk_action=answer.bulk_action if answer else None,
                    customers=answer.customers if answer else 0,
                    status=status,
                    outcome=outcome,
                    failure_count=answer.failures if answer else 0,
                    duration_ms=round((self._monotonic() - started) * 1000, 3),
                    auth=scheme,
                    processed=processed,
                )
            )

        latency = injector.latency_seconds(endpoint)
        if latency > 0:
            await asyncio.sleep(latency)

        scheme: str | None = None
        if authenticate:
            scheme, failure = self._auth.check(request.headers)
            if failure is not None:
                log(failure.status, _calls.UNAUTHORIZED, scheme=scheme)
                return json_response(failure.status, failure.body())

        limit = injector.faults.limit_for(endpoint)
        if limit is not None:
            wait = injector.limiter.acquire(endpoint, limit)
            if wait is not None:
                log(429, _calls.RATE_LIMITED, scheme=scheme)
                return json_response(
                    429,
                    injector.faults.error_body(429),
                    injector.retry_after_header(max(wait, 1.0)),
                )

        decision = injector.decide(endpoint)
        outcome = (
            _calls.PROCESSED
            if decision.kind in ("none", "entry_error")
            else _calls.FAULT_PREFIX + decision.label
        )
        if decision.kind == "status":
            status = decision.status or 500
            headers = (
                injector.retry_after_header(injector.faults.retry_after_seconds)
                if status == 429
                else {}
            )
            log(status, outcome, scheme=scheme)
            return json_response(status, injector.faults.error_body(status), headers)
        if decision.kind == "expired_token":
            body = {
                "code": _codes.TOKEN_EXPIRED,
                "message": f"Token expired at {_iso(self._clock())}",
            }
            log(401, outcome, scheme=scheme)
            return json_response(401, body)

        raw = await request.body()
        answer: _Answer | None = None
        if decision.kind not in ("drop", "timeout") or injector.faults.process_before_fault:
            answer = process(
                raw, request, request_id, self._clock(), decision.kind == "entry_error"
            )
        if decision.kind == "drop":
            log(None, outcome, answer=answer, processed=answer is not None, scheme=scheme)
            return DropConnection()
        if decision.kind == "timeout" and not await self._hold(
            request, injector.faults.timeout_seconds
        ):
            log(None, outcome, answer=answer, processed=answer is not None, scheme=scheme)
            return DropConnection()
        if answer is None:
            # The client outwaited a timeout fault: answer for real, as a slow server would.
            answer = process(raw, request, request_id, self._clock(), fail=False)
        log(answer.status, outcome, answer=answer, processed=True, scheme=scheme)
        return json_response(answer.status, answer.body, answer.headers)

    async def _hold(self, request: Request, seconds: float) -> bool:
        """Wait ``seconds``; False when the client hung up or the server is stopping first."""
        delay = asyncio.ensure_future(asyncio.sleep(seconds))
        disconnect = asyncio.ensure_future(_wait_disconnect(request))
        released = asyncio.Event()
        if self._stopping:
            released.set()
        self._held.add(released)
        closing = asyncio.ensure_future(released.wait())
        tasks = (delay, disconnect, closing)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # Decided before cancelling: a cancelled task also counts as done.
            outwaited = delay in done and disconnect not in done and closing not in done
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._held.discard(released)
        return outwaited


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")
