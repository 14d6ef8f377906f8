"""The client's exception tree.

```
CapillaryError                 base of everything the client raises on purpose
├── DeliveryIncompleteError    some commands of the batch have no final result yet
│   ├── ApiUnavailable         retryable trouble outlasted the attempts (network, timeout,
│   │                          429, 5xx, 4001, 8896, malformed body), or a command's answer
│   │                          was lost: keep `pending`, retry later (verify `unsure` first)
│   └── AuthenticationFailed   credentials refused even after one token refresh: pause
└── LookupFailedError          the lookup itself was refused, or its answer cannot tell this
                               promotion's standing: asking again the same way will not help
```

A `DeliveryIncompleteError` is a partial success report as much as an error: `completed` holds the
final results of the commands that did settle (publish them), `pending` the commands that did
not (keep them, resend later; they produce no outcome yet), `unsure` those of the pending whose
last request may have been applied (verify them with the lookup before resending).
`lookup_promotion` raises `ApiUnavailable` and `AuthenticationFailed` too, with nothing
completed, pending or unsure. httpx exceptions never escape the client: they are translated
where they enter (the exchanges and the token request).

Messages carry codes, statuses and counts only: never credentials, tokens, headers, bodies or
customer identifiers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from promo_bridge.capillary._errors import UnavailableReason
from promo_bridge.domain.commands import Command
from promo_bridge.domain.outcomes import CommandResult


class CapillaryError(Exception):
    """Base class of the client's exceptions."""


class DeliveryIncompleteError(CapillaryError):
    """Some commands of a batch have no final result; the others' results are attached.

    Attributes:
        completed: final results, in batch order, for the commands that settled.
        pending: the commands without a result, in batch order; no outcome must be published
            for them yet.
        attempts: HTTP requests made so far per pending command id (including
            `Batch.attempts`), for the caller to carry into the next `Batch.attempts`.
        unsure: command ids of pending commands whose last request may have been applied
            (its answer was lost to a timeout or a broken connection, and the action is one of
            `ClientConfig.verify_unsure_actions`): not resent; verify before sending again.
    """

    def __init__(
        self,
        message: str,
        *,
        completed: Sequence[CommandResult] = (),
        pending: Sequence[Command] = (),
        attempts: Mapping[str, int] | None = None,
        unsure: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(message)
        self.completed: tuple[CommandResult, ...] = tuple(completed)
        self.pending: tuple[Command, ...] = tuple(pending)
        self.attempts: Mapping[str, int] = MappingProxyType(dict(attempts or {}))
        self.unsure = unsure


class ApiUnavailable(DeliveryIncompleteError):  # noqa: N818 - the runtime's agreed name
    """Retryable trouble persisted past the attempt bound (or asked for a longer wait).

    Attributes:
        reason: the last reason seen.
        retry_after: the longest wait the API asked for (seconds), if it asked.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: UnavailableReason,
        retry_after: float | None = None,
        completed: Sequence[CommandResult] = (),
        pending: Sequence[Command] = (),
        attempts: Mapping[str, int] | None = None,
        unsure: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(
            message, completed=completed, pending=pending, attempts=attempts, unsure=unsure
        )
        self.reason = reason
        self.retry_after = retry_after


class AuthenticationFailed(DeliveryIncompleteError):  # noqa: N818 - the agreed name
    """The API refused the credentials, also after one token refresh (or the refresh itself).

    Attributes:
        code: the Capillary code (401, 403, 498, 4000, 320001...), if the body carried one.
        http_status: the HTTP status of the refusal, if there was a response.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        completed: Sequence[CommandResult] = (),
        pending: Sequence[Command] = (),
        attempts: Mapping[str, int] | None = None,
        unsure: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(
            message, completed=completed, pending=pending, attempts=attempts, unsure=unsure
        )
        self.code = code
        self.http_status = http_status


class LookupFailedError(CapillaryError):
    """A lookup got an answer that settles nothing, and the same request would get it again.

    The API refused the request (a code such as 1101, 8874 or 11013, or a 4xx without one), or
    its answer lists the promotion more than once, or lists only part of the customer's
    promotions without this one: the standing cannot be told, which is not "holds nothing".

    Attributes:
        code: the Capillary code of a refusal, if the body carried one.
        http_status: the HTTP status of the answer.
    """

    def __init__(
        self, message: str, *, code: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
