"""Client configuration: where the API is, how to authenticate, and how hard to push it."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from promo_bridge.domain.commands import DEFAULT_BATCH_LIMITS, Action, Endpoint

# enrolAndEarn and revokeEnrolAndEarn document "a maximum of 100 customers at once".
_DOCUMENTED_MAX_BATCH = 100
_CAPPED_ENDPOINTS = frozenset({Endpoint.ENROL_AND_EARN, Endpoint.REVOKE_ENROL_AND_EARN})


class BasicAuth(BaseModel):
    """Basic authentication: a till code and its password (sent as an md5 hex digest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["basic"] = "basic"
    till_code: str = Field(min_length=1)
    password: SecretStr


class OAuthAuth(BaseModel):
    """OAuth client credentials, exchanged for a short-lived token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["oauth"] = "oauth"
    # Not a secret on its own, but half of the credential pair: kept out of reprs.
    key: str = Field(min_length=1, repr=False)
    secret: SecretStr


def _per_endpoint(value: object, default: Mapping[Endpoint, int]) -> object:
    """Accept one int for every endpoint, or a partial mapping merged over the defaults."""
    if isinstance(value, int) and not isinstance(value, bool):
        return dict.fromkeys(Endpoint, value)
    if isinstance(value, Mapping):
        return {**default, **{Endpoint(k): v for k, v in value.items()}}
    return value


class ClientConfig(BaseModel):
    """Everything the Capillary client needs; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="Scheme and host (optionally a path prefix) of the API.")
    auth: Annotated[BasicAuth | OAuthAuth, Field(discriminator="kind")]
    batch_limits: dict[Endpoint, int] = Field(
        default_factory=lambda: dict(DEFAULT_BATCH_LIMITS),
        description="Customers per call; a larger batch is split. unEnroll must stay 1.",
    )
    calls_per_minute: dict[Endpoint, int] = Field(
        default_factory=lambda: dict.fromkeys(Endpoint, 100),
        description="Client-side budget per endpoint: calls per `budget_window_s`.",
    )
    # The customer promotion lookup is an API of its own for Capillary's per-API limits.
    lookup_calls_per_minute: int = Field(
        default=100, ge=1, description="Client-side budget of lookups per `budget_window_s`."
    )
    # The budget's "minute". Production keeps 60 s; tests compress it to run in seconds.
    budget_window_s: float = Field(default=60.0, gt=0)
    # Calls that may leave back to back before spacing applies; 1 spreads every call evenly.
    budget_burst: int = Field(default=1, ge=1)
    max_in_flight: int = Field(default=8, ge=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    write_timeout_s: float = Field(default=10.0, gt=0)
    pool_timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, description="HTTP requests per call at most.")
    # Actions whose call is not resent after a failure that may follow an applied request
    # (read/write timeout, connection broken after sending): the calls take no idempotency
    # key, and a second ENROL or EARN cannot be told from a new one. Such commands come back
    # pending and `unsure`, for the caller to verify with the lookup. Empty: resend as for
    # any other failure.
    verify_unsure_actions: frozenset[Action] = frozenset({Action.ENROL, Action.EARN})
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=30.0, gt=0)
    # A Retry-After (or backoff) longer than this ends the call as ApiUnavailable at once, with
    # the wait as `retry_after`, instead of holding the batch and an attempt for that long.
    max_retry_wait_s: float = Field(default=60.0, gt=0)
    unenroll_path_prefix: str = "/v3.1"
    # HTTP statuses whose body is an endpoint response (success or partial failure). The docs
    # do not say which status a partial failure carries; older v2 docs use 201.
    accepted_statuses: frozenset[int] = frozenset({200, 201})
    # Codes meaning "this customer is not enrolled in the target" for an unEnroll, so the
    # un-enrol is already applied. Capillary documents none; empty by default so that no code
    # is assumed (the simulator's invented one is 310120: configure it when talking to it).
    unenroll_not_enrolled_codes: frozenset[int] = frozenset()
    # Refresh an OAuth token this long before its ttl runs out (capped at half the ttl).
    token_refresh_margin_s: float = Field(default=30.0, ge=0)
    # The revokeDirectEarn page's main request example carries "bulkAction": "REVOKE_EARN", its
    # "with earned Id" example none; the body table lists none. We follow the main example.
    revoke_direct_earn_bulk_action: bool = True
    # PEM CA bundle that verifies the API's certificate instead of the system's. There is no
    # way to turn verification off: the calls carry loyalty credentials.
    ca_file: Path | None = None
    # Proxy settings from the environment (HTTPS_PROXY...); ignored when a transport is given.
    trust_env: bool = True
    user_agent: str = "promo-bridge"

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        # Credentials in the URL would end up in logs and exception messages.
        if url.userinfo:
            raise ValueError("base_url must not carry credentials; use auth")
        if url.query or url.fragment:
            raise ValueError("base_url must not carry a query or fragment")
        return value

    @field_validator("batch_limits", mode="before")
    @classmethod
    def _merge_batch_limits(cls, value: object) -> object:
        return _per_endpoint(value, DEFAULT_BATCH_LIMITS)

    @field_validator("batch_limits")
    @classmethod
    def _check_batch_limits(cls, value: dict[Endpoint, int]) -> dict[Endpoint, int]:
        for endpoint, limit in value.items():
            if limit < 1:
                raise ValueError(f"batch limit of {endpoint} must be at least 1")
            if endpoint in _CAPPED_ENDPOINTS and limit > _DOCUMENTED_MAX_BATCH:
                raise ValueError(f"{endpoint} takes at most {_DOCUMENTED_MAX_BATCH} customers")
        # unEnroll answers one customerId ("data"): a response to several could not be matched.
        if value[Endpoint.UNENROLL] != 1:
            raise ValueError("unEnroll takes one record per call: its batch limit must be 1")
        return value

    @field_validator("calls_per_minute", mode="before")
    @classmethod
    def _merge_calls(cls, value: object) -> object:
        return _per_endpoint(value, dict.fromkeys(Endpoint, 100))

    @field_validator("calls_per_minute")
    @classmethod
    def _check_calls(cls, value: dict[Endpoint, int]) -> dict[Endpoint, int]:
        for endpoint, calls in value.items():
            if calls < 1:
                raise ValueError(f"calls_per_minute of {endpoint} must be at least 1")
        return value

    @field_validator("accepted_statuses")
    @classmethod
    def _check_accepted(cls, value: frozenset[int]) -> frozenset[int]:
        # Auth and retryable statuses are decided before any body is read (see _errors).
        if not value or any(not 200 <= status < 300 for status in value):
            raise ValueError("accepted_statuses must be a non-empty set of 2xx statuses")
        return value

    @field_validator("unenroll_path_prefix")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        stripped = value.strip().strip("/")
        return f"/{stripped}" if stripped else ""

    @model_validator(mode="after")
    def _check_backoff(self) -> ClientConfig:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must not be below backoff_base_s")
        return self

    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name verification, against `ca_file` when one is set.

        Raises OSError or ssl.SSLError when `ca_file` cannot be read as PEM.
        """
        if self.ca_file is None:
            # httpx's own default: certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR.
            return httpx.create_ssl_context(trust_env=self.trust_env)
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def timeout(self) -> httpx.Timeout:
        """The explicit httpx timeout of every request."""
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.write_timeout_s,
            pool=self.pool_timeout_s,
        )
