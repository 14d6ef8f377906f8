"""Reconciliation: did a call whose answer never came apply its command?

A command is "unsure" when its call may have reached Capillary but no answer says what it did
(the process died mid-call, the answer was lost to a timeout or a dropped connection). Sending
it again could repeat the side effect (the bulk calls take no idempotency key), so it is first
checked with the customer promotion lookup (`GET /v2/customers/lookup/promotionData`):

- ENROL: the holding has an issualId → applied (with it); none → not applied, send.
- EARN: the earnedIds the lookup shows (active and revoked) minus those this service recorded
  for the holding (the ledger) are the earns it does not know. None → not applied, send. Exactly
  one → applied, and that earnedId is the command's (with the holding's issualId, unless the
  promotion is direct issue: it has no enrolment). More than one → undecided: earns came from
  elsewhere too (another system, or before this service kept a ledger), and which one is ours
  cannot be told; the command fails (`unverified`) rather than risking a second reward.
- A customer the API does not know, or one without this promotion → not applied, send.

A lane sends one command at a time, so at most one unsure command per holding is verified at
once. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from promo_bridge.domain.commands import Action, Command
from promo_bridge.domain.outcomes import CommandResult, ErrorClass, OutcomeStatus


@dataclass(frozen=True, slots=True)
class Standing:
    """A customer's holding of one promotion, as the lookup shows it."""

    issual_id: str | None
    # Active earns; revoked ones are in `revoked_earn_ids`. Ids are text whatever the API sent.
    earned_ids: frozenset[str] = frozenset()
    revoked_earn_ids: frozenset[str] = frozenset()
    # promotionStatusForCustomer as sent (AVAILABLE_TO_ENROL, AVAILABLE_TO_EARN,
    # AVAILABLE_TO_REDEEM, EXPIRED; the docs do not promise there are no others).
    status: str = ""


class Finding(StrEnum):
    """What the lookup tells about an unsure command."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The finding for one unsure command, with what the lookup showed of it."""

    finding: Finding
    issual_id: str | None = None
    earned_id: str | None = None
    reason: str = ""


def verify(command: Command, standing: Standing | None, known_earned: frozenset[str]) -> Verdict:
    """Decide whether the unsure `command` was applied (see the module docstring)."""
    if standing is None:
        return Verdict(Finding.NOT_APPLIED, reason="customer holds no such promotion")
    if command.action is Action.ENROL:
        if standing.issual_id:
            return Verdict(Finding.APPLIED, issual_id=standing.issual_id)
        return Verdict(Finding.NOT_APPLIED, reason="not enrolled")
    if command.action is Action.EARN:
        return _verify_earn(command, standing, known_earned)
    # Other actions are not verified: their repetition is answered with an already-applied code.
    return Verdict(Finding.NOT_APPLIED, reason="not verified")


def _verify_earn(command: Command, standing: Standing, known_earned: frozenset[str]) -> Verdict:
    unknown = sorted((standing.earned_ids | standing.revoked_earn_ids) - known_earned)
    if not unknown:
        return Verdict(Finding.NOT_APPLIED, reason="no earn this service did not record")
    if len(unknown) == 1:
        # A direct-issue holding has no enrolment: whatever issualId the lookup shows is not one.
        issual_id = None if command.issual_id_is_dummy else standing.issual_id
        return Verdict(Finding.APPLIED, issual_id=issual_id, earned_id=unknown[0])
    return Verdict(
        Finding.UNDECIDED,
        reason=f"{len(unknown)} earns this service did not record; which is ours is unknown",
    )


def verified_result(command: Command, verdict: Verdict) -> CommandResult | None:
    """The final result a verdict gives the command; None when it must be sent."""
    if verdict.finding is Finding.APPLIED:
        return CommandResult(
            command_id=command.command_id,
            status=OutcomeStatus.APPLIED,
            issual_id=verdict.issual_id,
            earned_id=verdict.earned_id,
            attempts=0,
            extra={"verified_by": "lookup"},
        )
    if verdict.finding is Finding.UNDECIDED:
        return CommandResult(
            command_id=command.command_id,
            status=OutcomeStatus.FAILED,
            error_class=ErrorClass.UNVERIFIED,
            error_message=verdict.reason,
            attempts=0,
        )
    return None
