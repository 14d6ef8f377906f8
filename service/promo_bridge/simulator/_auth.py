"""Authentication as FACTS.md describes it: Basic (till + md5 of the password) and OAuth.

Statuses and bodies (the docs give the codes, not the HTTP statuses; these are the simulator's):
- no credentials, wrong Basic credentials, unknown or forged token: HTTP 401
  ``{"code": 401, "message": "Unauthorized"}``;
- an expired token: HTTP 401 ``{"code": 498, "message": "Token expired at <ISO time>"}``;
- token generation with a bad key or secret: HTTP 401
  ``{"data": null, "errors": [{"code": 320001, "message": "Invalid client key and secret"}]}``.

Tokens are JWT-shaped (header.payload.signature, HS256 with a per-process key) so a client that
peeks at them sees the usual structure. A token stays valid until ``ttlSeconds`` pass, the
OAuth key is changed, or the admin expires every issued token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from promo_bridge.simulator import _codes

Scheme = Literal["basic", "oauth"]
BASIC: Final[Scheme] = "basic"
OAUTH: Final[Scheme] = "oauth"
TOKEN_HEADER = "x-cap-api-oauth-token"  # noqa: S105 - a header name


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the simulated org accepts. Dev defaults: the worked Basic example of the docs."""

    till: str = "store.server"
    password: str = "server123"  # noqa: S105 - the docs' public worked example
    oauth_key: str = "promo-bridge-dev"
    oauth_secret: str = "promo-bridge-dev-secret"  # noqa: S105 - dev default of a dev tool
    token_ttl_seconds: float = 300.0
    basic_enabled: bool = True
    oauth_enabled: bool = True

    def basic_header(self) -> str:
        """The ``Authorization`` header value a client must send for these credentials."""
        return basic_header(self.till, self.password)

    def with_changes(self, changes: Mapping[str, Any]) -> Credentials:
        """A copy with some fields replaced; unknown names raise ``ValueError``."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown credential fields: {sorted(unknown)}")
        updated = replace(self, **changes)
        if updated.token_ttl_seconds <= 0:
            raise ValueError("token_ttl_seconds must be positive")
        return updated

    def to_dict(self) -> dict[str, Any]:
        """Admin view; secrets are shown because this is a dev tool with dev credentials."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def basic_header(till: str, password: str) -> str:
    """``Basic base64("<till>:<md5 hex of password>")`` as FACTS.md documents."""
    digest = hashlib.md5(password.encode(), usedforsecurity=False).hexdigest()
    return "Basic " + base64.b64encode(f"{till}:{digest}".encode()).decode()


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a request was refused: HTTP status plus the body's code and message."""

    status: int
    code: int
    message: str

    def body(self) -> dict[str, Any]:
        """The response body."""
        return {"code": self.code, "message": self.message}


_UNAUTHORIZED = AuthFailure(401, _codes.UNAUTHORIZED, _codes.message(_codes.UNAUTHORIZED))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Checks credentials and issues and verifies tokens (one per simulator)."""

    def __init__(self, credentials: Credentials, clock: Callable[[], float]) -> None:
        self.credentials = credentials
        self._clock = clock
        self._signing_key = secrets.token_bytes(32)
        self._serial = 0
        # Tokens with a serial below this were expired by the admin.
        self._min_valid_serial = 0
        self._expired_at = 0.0
        self._forced_expiries = 0

    def issue(self, key: object, secret: object) -> dict[str, Any] | None:
        """A token for a matching key and secret, else None."""
        creds = self.credentials
        if not (
            creds.oauth_enabled
            and isinstance(key, str)
            and isinstance(secret, str)
            and hmac.compare_digest(key.encode(), creds.oauth_key.encode())
            and hmac.compare_digest(secret.encode(), creds.oauth_secret.encode())
        ):
            return None
        now = self._clock()
        self._serial += 1
        header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
        claims = {
            "iss": "capillary-api-simulator",
            "sub": key,
            "iat": round(now, 3),
            "exp": round(now + creds.token_ttl_seconds, 3),
            "jti": f"{self._serial}-{secrets.token_hex(4)}",
            "n": self._serial,
        }
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64url(self._sign(f"{header}.{payload}"))
        return {
            "accessToken": f"{header}.{payload}.{signature}",
            "ttlSeconds": int(creds.token_ttl_seconds),
        }

    def expire_issued_tokens(self) -> None:
        """Make every token issued so far answer 498 (a client must fetch a new one)."""
        self._min_valid_serial = self._serial + 1
        self._expired_at = self._clock()

    def force_expiries(self, count: int) -> None:
        """Make the next ``count`` token checks answer 498 whatever the token."""
        self._forced_expiries = max(0, count)

    @property
    def forced_expiries_left(self) -> int:
        """How many forced 498s remain."""
        return self._forced_expiries

    def check(self, headers: Mapping[str, str]) -> tuple[Scheme | None, AuthFailure | None]:
        """The scheme a request used and, when refused, why."""
        token = headers.get(TOKEN_HEADER)
        if token is not None:
            return OAUTH, self._check_token(token.strip())
        authorization = headers.get("authorization")
        if authorization is not None:
            return BASIC, self._check_basic(authorization)
        return None, _UNAUTHORIZED

    def _check_basic(self, value: str) -> AuthFailure | None:
        creds = self.credentials
        scheme, _, encoded = value.strip().partition(" ")
        if not creds.basic_enabled or scheme.lower() != "basic":
            return _UNAUTHORIZED
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return _UNAUTHORIZED
        till, sep, digest = decoded.partition(":")
        expected = hashlib.md5(creds.password.encode(), usedforsecurity=False).hexdigest()
        if (
            sep
            and hmac.compare_digest(till.encode(), creds.till.encode())
            and hmac.compare_digest(digest.lower().encode(), expected.encode())
        ):
            return None
        return _UNAUTHORIZED

    def _check_token(self, token: str) -> AuthFailure | None:
        claims = self._verified_claims(token)
        if claims is None or not self.credentials.oauth_enabled:
            return _UNAUTHORIZED
        if claims.get("sub") != self.credentials.oauth_key:
            # The key was rotated: tokens of the old key no longer authenticate.
            return _UNAUTHORIZED
        expired_at: float | None = None
        if self._forced_expiries > 0:
            self._forced_expiries -= 1
            expired_at = self._clock()
        elif int(claims.get("n", 0)) < self._min_valid_serial:
            expired_at = self._expired_at
        elif float(claims.get("exp", 0)) <= self._clock():
            expired_at = float(claims["exp"])
        if expired_at is None:
            return None
        when = datetime.fromtimestamp(expired_at, tz=UTC).isoformat(timespec="seconds")
        return AuthFailure(401, _codes.TOKEN_EXPIRED, f"Token expired at {when}")

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = _b64url(self._sign(f"{parts[0]}.{parts[1]}"))
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            return None
        try:
            claims = json.loads(_b64url_decode(parts[1]))
        except (ValueError, binascii.Error):
            return None
        return claims if isinstance(claims, dict) else None

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
