"""The Capillary client as the engine's sender port, and client hooks to Prometheus series."""

from __future__ import annotations

from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    CapillaryClient,
    ClientHooks,
    UnavailableReason,
)
from promo_bridge.domain.commands import Batch, Endpoint
from promo_bridge.domain.outcomes import Delivery
from promo_bridge.observability.metrics import Metrics


class CapillarySender:
    """The engine's sender port over the client: the client's exceptions become `Delivery`.

    This is where Capillary's exception tree ends: the engine sees only domain values.
    """

    def __init__(self, client: CapillaryClient, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    async def send(self, batch: Batch) -> Delivery:
        """Send the batch; every command comes back either settled or pending."""
        try:
            results = await self._client.send(batch)
        except ApiUnavailable as exc:
            self._metrics.batches_unavailable.labels(batch.key.endpoint.value).inc()
            return Delivery(
                completed=exc.completed,
                pending=exc.pending,
                pause_s=exc.retry_after,
                attempts=exc.attempts,
                detail=str(exc),
            )
        except AuthenticationFailed as exc:
            return Delivery(
                completed=exc.completed,
                pending=exc.pending,
                auth_refused=True,
                attempts=exc.attempts,
                detail=str(exc),
            )
        return Delivery(completed=tuple(results))


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
