"""Settings to Capillary client configuration, and client hooks to Prometheus series."""

from __future__ import annotations

from promo_bridge.capillary import (
    BasicAuth,
    ClientConfig,
    ClientHooks,
    OAuthAuth,
    UnavailableReason,
)
from promo_bridge.domain.commands import DEFAULT_BATCH_LIMITS, Endpoint
from promo_bridge.observability.metrics import Metrics
from promo_bridge.settings import AuthMode, Settings


def client_config(settings: Settings) -> ClientConfig:
    """The client's configuration from the service settings (validated there already)."""
    auth: BasicAuth | OAuthAuth
    if settings.capillary_auth is AuthMode.BASIC:
        assert settings.capillary_till_code is not None
        assert settings.capillary_password is not None
        auth = BasicAuth(
            till_code=settings.capillary_till_code, password=settings.capillary_password
        )
    else:
        assert settings.capillary_oauth_key is not None
        assert settings.capillary_oauth_secret is not None
        auth = OAuthAuth(key=settings.capillary_oauth_key, secret=settings.capillary_oauth_secret)
    limits = dict(DEFAULT_BATCH_LIMITS)
    limits[Endpoint.REVOKE_DIRECT_EARN] = settings.capillary_revoke_direct_earn_batch_size
    return ClientConfig(
        base_url=settings.capillary_base_url,
        auth=auth,
        batch_limits=limits,
        calls_per_minute=settings.capillary_calls_per_minute,
        max_in_flight=settings.capillary_max_in_flight,
        connect_timeout_s=settings.capillary_connect_timeout_s,
        read_timeout_s=settings.capillary_read_timeout_s,
        max_attempts=settings.capillary_max_attempts,
        unenroll_path_prefix=settings.capillary_unenroll_path_prefix,
        unenroll_not_enrolled_codes=frozenset(settings.capillary_unenroll_not_enrolled_codes),
    )


def metrics_hooks(metrics: Metrics) -> ClientHooks:
    """Client hooks that feed the service's Prometheus series."""

    def on_request(
        endpoint: Endpoint, status: int | None, seconds: float, _request_id: str | None
    ) -> None:
        label = str(status) if status is not None else "error"
        metrics.api_latency.labels(endpoint.value, label).observe(seconds)

    def on_retry(endpoint: Endpoint, reason: UnavailableReason) -> None:
        metrics.api_retries.labels(endpoint.value, reason.value).inc()

    def on_throttle_wait(endpoint: Endpoint, seconds: float) -> None:
        metrics.api_throttle_wait.labels(endpoint.value).inc(seconds)

    def on_token_refresh(_ok: bool, _seconds: float) -> None:
        metrics.token_refreshes.inc()

    return ClientHooks(
        on_request=on_request,
        on_retry=on_retry,
        on_throttle_wait=on_throttle_wait,
        on_token_refresh=on_token_refresh,
    )
