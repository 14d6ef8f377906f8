"""The validated content of a rules file, and the errors that refuse one.

`_rules_yaml` builds these from YAML; `rules.RuleSet` evaluates them. Everything here is checked
at load, so that a mistake in the rules file stops the service at start-up instead of surfacing
later as API calls that Capillary refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from promo_bridge.domain._cel import Condition
from promo_bridge.domain.commands import (
    Action,
    IdentifierName,
    PromotionRef,
    PromotionType,
    TargetRef,
)

# PromotionType lives in `commands` (a PromotionRef carries it to the client); it is listed here
# too because readers of a RulesSpec meet it on PromotionDef.
__all__ = [
    "ACTIONS_OF_TYPE",
    "DEFAULT_IDENTIFIER_PREFERENCE",
    "PROMOTION_TYPE_NAMES",
    "TARGET_ACTIONS",
    "ActionDef",
    "PromotionDef",
    "PromotionType",
    "RuleDef",
    "RuleProblem",
    "RulesError",
    "RulesSpec",
    "TargetDef",
]

# Backend names from FACTS.md: pointsOfferType and loyaltyEarningType values.
PROMOTION_TYPE_NAMES: Final[Mapping[str, PromotionType]] = {
    "ENROL_AND_ISSUE": PromotionType.ENROL_AND_ISSUE,
    "LOYALTY_EARNING": PromotionType.ENROL_AND_ISSUE,
    "ISSUE_AND_EARN": PromotionType.ENROL_AND_ISSUE,
    "DIRECT_ISSUE": PromotionType.DIRECT_ISSUE,
    "LOYALTY": PromotionType.DIRECT_ISSUE,
    "DIRECT": PromotionType.DIRECT_ISSUE,
    "DIRECT_EARN": PromotionType.DIRECT_ISSUE,
}

# Enrol or revoke_enrol on a direct-issue promotion answers 8902. revokeDirectEarn is documented
# for both LOYALTY and LOYALTY_EARNING, so it is allowed on both.
ACTIONS_OF_TYPE: Final[Mapping[PromotionType, frozenset[Action]]] = {
    PromotionType.ENROL_AND_ISSUE: frozenset(
        {
            Action.ENROL,
            Action.EARN,
            Action.REVOKE_EARN,
            Action.REVOKE_ENROL,
            Action.REVOKE_DIRECT_EARN,
        }
    ),
    PromotionType.DIRECT_ISSUE: frozenset(
        {Action.EARN, Action.REVOKE_EARN, Action.REVOKE_DIRECT_EARN}
    ),
}

TARGET_ACTIONS: Final = frozenset({Action.UNENROLL})

DEFAULT_IDENTIFIER_PREFERENCE: Final = (
    IdentifierName.ID,
    IdentifierName.MOBILE,
    IdentifierName.EMAIL,
)


@dataclass(frozen=True, slots=True)
class PromotionDef:
    """A promotion as the rules file names it."""

    name: str
    ref: PromotionRef
    type: PromotionType
    line: int


@dataclass(frozen=True, slots=True)
class TargetDef:
    """A milestone or streak target as the rules file names it."""

    name: str
    ref: TargetRef
    line: int


@dataclass(frozen=True, slots=True)
class ActionDef:
    """One entry of a rule's `then` list."""

    # Position in the `then` list: part of the command_id, so it must stay stable.
    index: int
    action: Action
    subject: str
    promotion: PromotionRef | None
    target: TargetRef | None
    line: int
    # revoke_earn only: every earn of the promotion, not just those of the event's order.
    revoke_all: bool = False


@dataclass(frozen=True, slots=True)
class RuleDef:
    """One rule: on an event type, when a condition holds, do these actions."""

    name: str
    on: str
    condition: Condition | None
    actions: tuple[ActionDef, ...]
    identifier_preference: tuple[IdentifierName, ...]
    line: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One finding in a rules file, located by file, line and (when inside one) rule."""

    file: str
    line: int
    message: str
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: "
        if self.rule is not None:
            where += f"rule '{self.rule}': "
        return where + self.message


@dataclass(frozen=True, slots=True)
class RulesSpec:
    """A whole rules file, valid."""

    filename: str
    program_id: int | None
    promotions: Mapping[str, PromotionDef]
    targets: Mapping[str, TargetDef]
    rules: tuple[RuleDef, ...]
    identifier_preference: tuple[IdentifierName, ...]
    # Suspicious but legal (e.g. a condition field no payload model declares).
    warnings: tuple[RuleProblem, ...] = ()


class RulesError(ValueError):
    """A rules file that cannot be used; lists every problem, not only the first."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
