"""Capillary loyalty-promotion API client.

Public surface:

- `CapillaryClient`: `await client.send(batch)` returns one `CommandResult` per command (batch
  order) or raises a `DeliveryIncompleteError` (`ApiUnavailable`, `AuthenticationFailed`)
  that carries the `completed` results and the `pending` commands.
- `ClientConfig`, `BasicAuth`, `OAuthAuth`: configuration.
- `ClientHooks`: callbacks for metrics.
- `ERROR_CODES`, `classify_code`, `CodeSpec`: the error taxonomy table.
- `UnavailableReason`, `SplitReason`: label values the hooks and exceptions carry.
"""

from promo_bridge.capillary._auth import basic_authorization
from promo_bridge.capillary._client import CapillaryClient
from promo_bridge.capillary._config import BasicAuth, ClientConfig, OAuthAuth
from promo_bridge.capillary._errors import (
    ERROR_CODES,
    Classification,
    CodeSpec,
    SplitReason,
    UnavailableReason,
    classify_code,
)
from promo_bridge.capillary._exceptions import (
    ApiUnavailable,
    AuthenticationFailed,
    CapillaryError,
    DeliveryIncompleteError,
)
from promo_bridge.capillary._hooks import ClientHooks

__all__ = [
    "ERROR_CODES",
    "ApiUnavailable",
    "AuthenticationFailed",
    "BasicAuth",
    "CapillaryClient",
    "CapillaryError",
    "Classification",
    "ClientConfig",
    "ClientHooks",
    "CodeSpec",
    "DeliveryIncompleteError",
    "OAuthAuth",
    "SplitReason",
    "UnavailableReason",
    "basic_authorization",
    "classify_code",
]
