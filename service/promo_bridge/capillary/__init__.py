"""Capillary loyalty-promotion API client.

Public surface:

- `CapillaryClient`: `await client.send(batch)` returns one `CommandResult` per command (batch
  order) or raises a `DeliveryIncompleteError` (`ApiUnavailable`, `AuthenticationFailed`)
  that carries the `completed` results, the `pending` commands and the `unsure` ones among
  them (their answer was lost: verify before resending).
  `await client.lookup_promotion(identifier_name, identifier_value, source, promotion)`
  returns a `PromotionStanding` or None, or raises `ApiUnavailable`, `AuthenticationFailed` or
  `LookupFailedError`.
  `client.set_budget_share(assigned, total)` makes the configured calls-per-minute budgets the
  org's, of which this client takes floor(budget x assigned / total) (0: no call until it grows).
- `ClientConfig`, `BasicAuth`, `OAuthAuth`: configuration.
- `ClientHooks`: callbacks for metrics; `EndpointLabel` (an `Endpoint` or `LookupEndpoint`) is
  what they are called with.
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
    LookupFailedError,
)
from promo_bridge.capillary._hooks import ClientHooks, EndpointLabel
from promo_bridge.capillary._lookup import LookupEndpoint, PromotionStanding

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
    "EndpointLabel",
    "LookupEndpoint",
    "LookupFailedError",
    "OAuthAuth",
    "PromotionStanding",
    "SplitReason",
    "UnavailableReason",
    "basic_authorization",
    "classify_code",
]
