"""Authentication: Basic (till code and md5 of the password) and OAuth (a short-lived token).

OAuth tokens are refreshed before their ttl runs out (minus a margin) and on demand after a
401/498. Refreshes are single-flight: however many calls find the token stale at once, one
token request is made and every caller awaits it.

Secrets never sit in exception messages, logs or reprs; httpx exceptions raised around a token
request are replaced (not chained) so a traceback renderer that shows frame locals cannot
reach the request body that carries the secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import httpx
import structlog

from promo_bridge.capillary._config import BasicAuth, OAuthAuth
from promo_bridge.capillary._errors import (
    HttpDisposition,
    UnavailableReason,
    classify_code,
    http_disposition,
)
from promo_bridge.capillary._exceptions import ApiUnavailable, AuthenticationFailed
from promo_bridge.capillary._hooks import ClientHooks, fire
from promo_bridge.capillary._retry import retry_after_of
from promo_bridge.capillary._wire import (
    OAUTH_TOKEN_HEADER,
    TOKEN_PATH,
    TokenGrant,
    decode_token,
    token_body,
)
from promo_bridge.domain.outcomes import ErrorClass

log = structlog.get_logger("promo_bridge.capillary")


def basic_authorization(till_code: str, password: str) -> str:
    """The Authorization header value: Basic base64("<till code>:<md5 hex of password>")."""
    # md5 is what the API prescribes here, not our choice of hash for security.
    digest = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()
    return "Basic " + base64.b64encode(f"{till_code}:{digest}".encode()).decode("ascii")


def request_error_reason(exc: httpx.RequestError) -> UnavailableReason:
    """What an httpx failure says about whether the request reached the server.

    CONNECT_ERROR only where the request certainly did not reach it: the client withholds
    resends of the other reasons for actions that must not be repeated (`verify_unsure_actions`),
    so a doubtful case errs towards "may have been applied".
    """
    if isinstance(
        exc,
        httpx.ConnectError
        | httpx.ConnectTimeout
        | httpx.PoolTimeout
        # No connection to the proxy, a scheme httpx cannot speak, a request h11 refused to
        # write: nothing complete left this process.
        | httpx.ProxyError
        | httpx.UnsupportedProtocol
        | httpx.LocalProtocolError,
    ):
        return UnavailableReason.CONNECT_ERROR
    if isinstance(exc, httpx.TimeoutException):
        return UnavailableReason.TIMEOUT
    if isinstance(exc, httpx.DecodingError):
        # An answer came, but its content encoding was broken.
        return UnavailableReason.MALFORMED_RESPONSE
    return UnavailableReason.NETWORK_ERROR


@dataclass(frozen=True, slots=True)
class Credentials:
    """Headers to authenticate one request; `generation` tells tokens apart without the token."""

    headers: Mapping[str, str] = field(repr=False)
    generation: int


class Authenticator(Protocol):
    """What the client needs from an authentication scheme."""

    async def credentials(self) -> Credentials:
        """Headers for the next request (may fetch a token)."""
        ...

    def invalidate(self, used: Credentials) -> bool:
        """The API refused `used`; True if fresh credentials are worth one more try."""
        ...

    async def verify(self) -> None:
        """Prove the credentials work where that is possible without a side effect."""
        ...

    async def aclose(self) -> None:
        """Stop background work."""
        ...


class BasicAuthenticator:
    """Basic authentication: one fixed header, nothing to refresh."""

    def __init__(self, auth: BasicAuth) -> None:
        header = basic_authorization(auth.till_code, auth.password.get_secret_value())
        self._credentials = Credentials({"Authorization": header}, 0)

    def __repr__(self) -> str:
        return "BasicAuthenticator()"

    async def credentials(self) -> Credentials:
        """The fixed Basic header."""
        return self._credentials

    def invalidate(self, used: Credentials) -> bool:
        """Nothing to refresh: a refusal of Basic credentials is final."""
        return False

    async def verify(self) -> None:
        """Basic credentials can only be proven by a real call."""
        return

    async def aclose(self) -> None:
        """Nothing runs in the background."""
        return


@dataclass(frozen=True, slots=True)
class _Token:
    credentials: Credentials
    refresh_at: float


class OAuthAuthenticator:
    """OAuth: a token from /v3/oauth/token/generate, refreshed single-flight."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: OAuthAuth,
        *,
        margin_s: float,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime],
        hooks: ClientHooks,
    ) -> None:
        self._http = http
        self._auth = auth
        self._margin_s = margin_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._hooks = hooks
        self._token: _Token | None = None
        self._generation = 0
        self._refresh: asyncio.Task[_Token] | None = None

    def __repr__(self) -> str:
        return "OAuthAuthenticator()"

    async def credentials(self) -> Credentials:
        """The current token's header, refreshing it first when stale."""
        token = self._token
        if token is None or self._clock() >= token.refresh_at:
            token = await self._refreshed()
        return token.credentials

    def invalidate(self, used: Credentials) -> bool:
        """Drop the token the API refused, unless another caller has already replaced it."""
        token = self._token
        if token is not None and token.credentials.generation == used.generation:
            self._token = None
        return True

    async def verify(self) -> None:
        """Fetch a fresh token (raises AuthenticationFailed or ApiUnavailable)."""
        self._token = None
        await self._refreshed()

    async def aclose(self) -> None:
        """Cancel a refresh in progress."""
        task = self._refresh
        if task is not None and not task.done():
            task.cancel()

    async def _refreshed(self) -> _Token:
        task = self._refresh
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._fetch(), name="capillary-token-refresh"
            )
            task.add_done_callback(self._refresh_done)
            self._refresh = task
        # Shielded: one waiter being cancelled must not cancel the refresh the others await.
        return await asyncio.shield(task)

    def _refresh_done(self, task: asyncio.Task[_Token]) -> None:
        if self._refresh is task:
            self._refresh = None
        if not task.cancelled():
            # Mark the failure as retrieved: every waiter may have been cancelled meanwhile.
            task.exception()

    async def _fetch(self) -> _Token:
        started = self._clock()
        ok = False
        try:
            grant = await self._request_token()
            ok = True
        finally:
            fire(self._hooks.on_token_refresh, ok, self._clock() - started)
        self._generation += 1
        if grant.ttl_s is None:
            # No ttl in the answer: use the token until the API refuses it (then refresh).
            refresh_at = math.inf
        else:
            refresh_at = started + grant.ttl_s - min(self._margin_s, grant.ttl_s / 2)
        token = _Token(
            Credentials({OAUTH_TOKEN_HEADER: grant.access_token}, self._generation), refresh_at
        )
        self._token = token
        log.info("capillary_token_refreshed", ttl_s=grant.ttl_s, generation=self._generation)
        return token

    async def _request_token(self) -> TokenGrant:
        try:
            response = await self._http.post(
                TOKEN_PATH,
                json=token_body(self._auth.key, self._auth.secret.get_secret_value()),
            )
        except httpx.RequestError as exc:
            reason = request_error_reason(exc)
            message = f"token request failed ({type(exc).__name__})"
            raise ApiUnavailable(message, reason=reason) from None
        status = response.status_code
        disposition = http_disposition(status, frozenset(range(200, 300)))
        if disposition is HttpDisposition.RETRYABLE:
            reason = (
                UnavailableReason.THROTTLED if status == 429 else UnavailableReason.SERVER_ERROR
            )
            retry_after = retry_after_of(response.headers, wall_clock=self._wall_clock)
            raise ApiUnavailable(
                f"token request answered HTTP {status}", reason=reason, retry_after=retry_after
            )
        decoded = decode_token(response.content)
        if isinstance(decoded, TokenGrant) and disposition is HttpDisposition.BODY:
            return decoded
        if decoded is not None and not isinstance(decoded, TokenGrant):
            found = classify_code(decoded.code, None)
            if found.error_class is ErrorClass.RETRYABLE:
                raise ApiUnavailable(
                    f"token request answered code {decoded.code}",
                    reason=UnavailableReason.RETRYABLE_CODE,
                )
            raise AuthenticationFailed(
                f"token request refused: HTTP {status}, code {decoded.code}",
                code=decoded.code,
                http_status=status,
            )
        if disposition is HttpDisposition.BODY:
            raise ApiUnavailable(
                f"token response (HTTP {status}) carries no token",
                reason=UnavailableReason.MALFORMED_RESPONSE,
            )
        # 401/403/498 or any other refusal without a code (wrong path included): no token
        # can be had, which the caller treats like refused credentials.
        raise AuthenticationFailed(f"token request refused: HTTP {status}", http_status=status)
