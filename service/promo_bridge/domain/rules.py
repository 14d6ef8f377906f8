"""Rules: which commands an event implies, and why each rule did or did not fire.

A rule set is loaded from YAML (format in DESIGN.md, checks in `_rules_yaml`). For an event, the
rules whose `on` equals the event type run in file order; for each rule whose condition holds,
every action of its `then` list becomes one command, in list order. Commands of one
(customer, promotion) therefore run in file and list order.

Conditions are CEL and see one variable, `event`: the event as JSON values, with these rules:
- decimal amounts (Money.amount) are doubles. Comparisons between int and double work
  (`event.data.total.amount >= 5000` and `>= 5000.0` both do), but CEL arithmetic does not mix
  them: write `event.data.total.amount * 2.0`, or convert with double()/int();
- times are RFC 3339 strings: compare them with `timestamp(event.time) > timestamp("...")`;
- fields that are absent or null are left out, so reading one is an evaluation error (the rule
  does not match, and the reason is counted): guard optional fields with `has(event.data.x)`.

A command's id is a stable hash of the event id, the rule name and the action's index in the
`then` list, so a redelivered event yields the same ids and the batcher sends each once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import cel

from promo_bridge.domain._cel import ROOT_VARIABLE, ConditionError, view_include
from promo_bridge.domain._rules_yaml import parse_rules
from promo_bridge.domain._values import value
from promo_bridge.domain.commands import Action, Command, EventPosition, IdentifierName
from promo_bridge.domain.events import (
    CEL_VIEW_CONTEXT,
    DEFAULT_REGISTRY,
    Customer,
    Event,
    EventRegistry,
    customer_of,
    order_id_of,
)
from promo_bridge.domain.rule_spec import (
    ActionDef,
    PromotionDef,
    PromotionType,
    RuleDef,
    RuleProblem,
    RulesError,
    RulesSpec,
    TargetDef,
)

__all__ = [
    "EXPLAIN_POSITION",
    "Explanation",
    "PromotionDef",
    "PromotionType",
    "RuleDef",
    "RuleProblem",
    "RuleSet",
    "RuleVerdict",
    "RulesError",
    "SkipReason",
    "SkippedAction",
    "TargetDef",
    "Verdict",
    "command_id",
    "load_rules",
]

# `explain` needs a position to build commands; this one says it came from no topic.
EXPLAIN_POSITION: Final = EventPosition(topic="(explain)", partition=0, offset=0)
_COMMAND_ID_HEX: Final = 32


class Verdict(StrEnum):
    """What a rule made of an event of its type."""

    MATCHED = "matched"
    CONDITION_FALSE = "condition_false"
    CONDITION_ERROR = "condition_error"


class SkipReason(StrEnum):
    """Why a matched rule's action made no command; values are metric label values."""

    # The payload has no customer, or an untyped payload's customer is invalid.
    NO_CUSTOMER = "no_customer"
    # The customer has none of the identifiers the rule's preference lists.
    NO_IDENTIFIER = "no_identifier"
    # unEnroll takes the numeric customerId, and the customer has no (numeric) id.
    NO_CUSTOMER_ID = "no_customer_id"


@value
class SkippedAction:
    """An action of a matched rule that could not become a command."""

    index: int
    action: Action
    subject: str
    reason: SkipReason
    detail: str


@value
class RuleVerdict:
    """One rule's verdict on one event."""

    rule: str
    verdict: Verdict
    # The condition's error when the verdict is CONDITION_ERROR.
    detail: str = ""
    commands: tuple[Command, ...] = ()
    skipped: tuple[SkippedAction, ...] = ()


@value
class Explanation:
    """Every verdict of the rules for one event type, on one event, in file order."""

    event_id: str
    event_type: str
    verdicts: tuple[RuleVerdict, ...] = ()
    # Conditions that were shown to the user, by rule, for rendering.
    conditions: Mapping[str, str] = field(default_factory=dict)

    @property
    def commands(self) -> list[Command]:
        """The commands, in the order they must be added to the batcher."""
        return list(self.parts()[0])

    @property
    def skipped(self) -> list[tuple[str, SkippedAction]]:
        """(rule, skipped action) for every action that made no command."""
        return self.parts()[1]

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(rule, error) for every condition that could not be evaluated."""
        return self.parts()[2]

    def parts(
        self,
    ) -> tuple[Sequence[Command], list[tuple[str, SkippedAction]], list[tuple[str, str]]]:
        """commands, skipped and errors in one pass over the verdicts (the intake's hot path)."""
        commands: Sequence[Command] = ()
        skipped: list[tuple[str, SkippedAction]] = []
        errors: list[tuple[str, str]] = []
        for verdict in self.verdicts:
            if verdict.verdict is Verdict.CONDITION_ERROR:
                errors.append((verdict.rule, verdict.detail))
            if verdict.skipped:
                skipped.extend((verdict.rule, skip) for skip in verdict.skipped)
            if verdict.commands:
                # One matched rule (the usual case) hands its tuple on without a copy.
                commands = verdict.commands if not commands else [*commands, *verdict.commands]
        return commands, skipped, errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for `rules explain --format json` and tests."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "rules": [
                {
                    "rule": v.rule,
                    "verdict": v.verdict.value,
                    "detail": v.detail or None,
                    "commands": [_command_dict(c) for c in v.commands],
                    "skipped": [
                        {
                            "action": s.action.value,
                            "subject": s.subject,
                            "reason": s.reason.value,
                            "detail": s.detail,
                        }
                        for s in v.skipped
                    ],
                }
                for v in self.verdicts
            ],
        }

    def render(self) -> str:
        """A human-readable account, one rule per paragraph."""
        lines = [
            f"event {self.event_id} ({self.event_type}): {_plural(len(self.commands), 'command')}"
        ]
        if not self.verdicts:
            lines.append(f"  no rule listens to '{self.event_type}'")
        for v in self.verdicts:
            condition = self.conditions.get(v.rule)
            if v.verdict is Verdict.MATCHED:
                lines.append(f"  {v.rule}: matched" + (f" ({condition})" if condition else ""))
            elif v.verdict is Verdict.CONDITION_FALSE:
                lines.append(f"  {v.rule}: not matched: condition is false ({condition})")
            else:
                lines.append(f"  {v.rule}: not matched: condition error: {v.detail}")
            lines.extend(f"    {_command_line(c)}" for c in v.commands)
            lines.extend(
                f"    skipped {s.action.value} {s.subject}: {s.reason.value}: {s.detail}"
                for s in v.skipped
            )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _TypeRules:
    """The rules of one event type, and the part of the event their conditions read."""

    rules: tuple[RuleDef, ...]
    include: dict[str, Any] | None


class RuleSet:
    """A loaded, validated rules file, ready to turn events into commands."""

    def __init__(self, spec: RulesSpec) -> None:
        self.spec = spec
        by_type: dict[str, list[RuleDef]] = {}
        for rule in spec.rules:
            by_type.setdefault(rule.on, []).append(rule)
        self._by_type: dict[str, _TypeRules] = {}
        for event_type, rules in by_type.items():
            conditions = [r.condition for r in rules if r.condition is not None]
            paths = [path for condition in conditions for path in condition.paths]
            self._by_type[event_type] = _TypeRules(tuple(rules), view_include(paths))

    @classmethod
    def from_yaml(
        cls,
        text: str,
        filename: str = "<rules>",
        registry: EventRegistry = DEFAULT_REGISTRY,
    ) -> RuleSet:
        """Parse and validate rules from YAML text; raise RulesError listing every problem."""
        return cls(parse_rules(text, filename, registry))

    @classmethod
    def load(cls, path: str | Path, registry: EventRegistry = DEFAULT_REGISTRY) -> RuleSet:
        """Read a rules file; raise RulesError (also when the file cannot be read)."""
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError([RuleProblem(name, 1, f"cannot read the rules file: {exc}")]) from exc
        return cls.from_yaml(text, name, registry)

    # -- what the file holds ----------------------------------------------------------------

    @property
    def filename(self) -> str:
        """The file the rules came from, as given."""
        return self.spec.filename

    @property
    def rules(self) -> tuple[RuleDef, ...]:
        """Every rule, in file order."""
        return self.spec.rules

    @property
    def promotions(self) -> Mapping[str, PromotionDef]:
        """Promotions by name."""
        return self.spec.promotions

    @property
    def targets(self) -> Mapping[str, TargetDef]:
        """Targets by name."""
        return self.spec.targets

    @property
    def warnings(self) -> tuple[RuleProblem, ...]:
        """Findings that do not stop the rules from loading."""
        return self.spec.warnings

    @property
    def event_types(self) -> frozenset[str]:
        """The event types at least one rule listens to."""
        return frozenset(self._by_type)

    def summary(self) -> str:
        """One line for `rules check` and start-up logs."""
        per_type = ", ".join(f"{t}: {len(r.rules)}" for t, r in sorted(self._by_type.items()))
        return (
            f"{_plural(len(self.rules), 'rule')} ({per_type}), "
            f"{_plural(len(self.promotions), 'promotion')}, {_plural(len(self.targets), 'target')}"
        )

    # -- evaluation -------------------------------------------------------------------------

    def commands_for(self, event: Event, position: EventPosition) -> list[Command]:
        """The commands an event implies, in the order they must be batched."""
        return self.evaluate(event, position).commands

    def explain(self, event: Event, position: EventPosition = EXPLAIN_POSITION) -> Explanation:
        """Like `evaluate`, with the conditions kept for display."""
        explanation = self.evaluate(event, position)
        conditions = {
            rule.name: rule.condition.source
            for rule in self._rules_of(event.type)
            if rule.condition is not None
        }
        return Explanation(
            explanation.event_id, explanation.event_type, explanation.verdicts, conditions
        )

    def evaluate(
        self, event: Event, position: EventPosition, customer_key: str = ""
    ) -> Explanation:
        """Every rule's verdict on an event, with the commands of the matched ones.

        `customer_key` (the input record's key) goes on every command: lanes and the ledger
        follow it.

        The runtime counts `errors` and `skipped` (they mean a rule could not do its job);
        a condition that is merely false is the normal case.
        """
        group = self._by_type.get(event.type)
        if group is None:
            return Explanation(event.id, event.type)
        context: cel.Context | None = None
        customer: _CustomerLookup | None = None
        verdicts: list[RuleVerdict] = []
        for rule in group.rules:
            condition = rule.condition
            if condition is not None:
                holds = condition.fast(event) if condition.fast is not None else None
                if holds is None:
                    if context is None:
                        # One view per event, shared by the rules of its type, and built only
                        # when a condition needs the library.
                        view = event.model_dump(
                            mode="json",
                            context=CEL_VIEW_CONTEXT,
                            include=group.include,
                            exclude_none=True,
                        )
                        context = cel.Context(variables={ROOT_VARIABLE: view})
                    try:
                        holds = condition.evaluate(context)
                    except ConditionError as exc:
                        verdicts.append(RuleVerdict(rule.name, Verdict.CONDITION_ERROR, str(exc)))
                        continue
                if not holds:
                    verdicts.append(RuleVerdict(rule.name, Verdict.CONDITION_FALSE))
                    continue
            if customer is None:
                customer = _CustomerLookup.of(event)
            verdicts.append(_apply(rule, event, position, customer, customer_key))
        return Explanation(event.id, event.type, tuple(verdicts))

    def _rules_of(self, event_type: str) -> tuple[RuleDef, ...]:
        group = self._by_type.get(event_type)
        return group.rules if group is not None else ()


def load_rules(path: str | Path, registry: EventRegistry = DEFAULT_REGISTRY) -> RuleSet:
    """Read and validate a rules file; raise RulesError listing every problem."""
    return RuleSet.load(path, registry)


def command_id(event_id: str, rule: str, action_index: int) -> str:
    """The deterministic id of the command an action of a rule makes for an event."""
    # NUL cannot occur in rule names, so distinct triples never collide by concatenation.
    material = f"{event_id}\x00{rule}\x00{action_index}".encode()
    return hashlib.sha256(material).hexdigest()[:_COMMAND_ID_HEX]


@value
class _CustomerLookup:
    """The event's customer, resolved once per event and only if some rule matched."""

    customer: Customer | None
    problem: str

    @classmethod
    def of(cls, event: Event) -> _CustomerLookup:
        try:
            customer = customer_of(event)
        except ValueError as exc:
            return cls(None, str(exc))
        return cls(customer, "" if customer is not None else "the event has no data.customer")


def _apply(
    rule: RuleDef,
    event: Event,
    position: EventPosition,
    lookup: _CustomerLookup,
    customer_key: str = "",
) -> RuleVerdict:
    commands: list[Command] = []
    skipped: list[SkippedAction] = []
    customer = lookup.customer
    order_id = order_id_of(event)
    for action in rule.actions:
        if customer is None:
            skipped.append(_skip(action, SkipReason.NO_CUSTOMER, lookup.problem))
            continue
        picked = _identifier(action, rule, customer)
        if isinstance(picked, SkippedAction):
            skipped.append(picked)
            continue
        name, value = picked
        commands.append(
            Command(
                command_id=command_id(event.id, rule.name, action.index),
                event_id=event.id,
                position=position,
                rule=rule.name,
                action=action.action,
                subject=action.subject,
                identifier_name=name,
                identifier_value=value,
                source=customer.source,
                promotion=action.promotion,
                target=action.target,
                order_id=order_id,
                revoke_all=action.revoke_all,
                customer_key=customer_key,
            )
        )
    return RuleVerdict(rule.name, Verdict.MATCHED, commands=tuple(commands), skipped=tuple(skipped))


def _identifier(
    action: ActionDef, rule: RuleDef, customer: Customer
) -> tuple[IdentifierName, str] | SkippedAction:
    if action.action is Action.UNENROLL:
        customer_id = customer.id
        if customer_id is None:
            detail = "unenroll needs the customer id, and the customer has none"
            return _skip(action, SkipReason.NO_CUSTOMER_ID, detail)
        if not (customer_id.isascii() and customer_id.isdigit()):
            detail = f"unenroll needs a numeric customer id, not '{customer_id}'"
            return _skip(action, SkipReason.NO_CUSTOMER_ID, detail)
        return IdentifierName.ID, customer_id
    for name in rule.identifier_preference:
        value: str | None = getattr(customer, name.value)
        if value is not None:
            return name, value
    wanted = ", ".join(name.value for name in rule.identifier_preference)
    return _skip(action, SkipReason.NO_IDENTIFIER, f"the customer has none of {wanted}")


def _skip(action: ActionDef, reason: SkipReason, detail: str) -> SkippedAction:
    return SkippedAction(action.index, action.action, action.subject, reason, detail)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _command_dict(command: Command) -> dict[str, Any]:
    return {
        "command_id": command.command_id,
        "rule": command.rule,
        "action": command.action.value,
        "subject": command.subject,
        "promotion_or_target": command.subject_label,
        "identifier_name": command.identifier_name.value,
        "identifier_value": command.identifier_value,
        "source": command.source,
    }


def _command_line(command: Command) -> str:
    return (
        f"{command.action.value} {command.subject} ({command.subject_label}) for "
        f"{command.identifier_name.value} {command.identifier_value} "
        f"[command {command.command_id}]"
    )
