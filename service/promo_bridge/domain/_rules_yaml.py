"""Reads a rules file from YAML into a `RulesSpec`, collecting every problem with its line.

The file is composed (not loaded) so that each node keeps its line mark. Mapping keys are read
as raw text: PyYAML's YAML 1.1 resolver would otherwise turn the key `on` into the boolean
True, and would silently keep only the last of duplicate keys.
"""

from __future__ import annotations

import collections.abc
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import BaseModel

from promo_bridge.domain._cel import ELEMENTS, ROOT_VARIABLE, Condition, Path, compile_condition
from promo_bridge.domain.commands import Action, IdentifierName, PromotionRef, TargetRef
from promo_bridge.domain.events import CloudEvent, EventRegistry, GenericPayload
from promo_bridge.domain.rule_spec import (
    ACTIONS_OF_TYPE,
    DEFAULT_IDENTIFIER_PREFERENCE,
    PROMOTION_TYPE_NAMES,
    TARGET_ACTIONS,
    ActionDef,
    PromotionDef,
    PromotionType,
    RuleDef,
    RuleProblem,
    RulesError,
    RulesSpec,
    TargetDef,
)

_TOP_KEYS: Final = ("program_id", "identifier_preference", "promotions", "targets", "rules")
_PROMOTION_KEYS: Final = ("promotion_id", "promo_identifier", "type", "program_id")
_TARGET_KEYS: Final = ("target_group_id", "target_id")
_RULE_KEYS: Final = ("name", "description", "on", "when", "then", "identifier_preference")
# Names become metric labels and log fields, so keep them to a plain, quotable alphabet.
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ACTION_NAMES: Final = ", ".join(action.value for action in Action)
_TYPE_NAMES: Final = ", ".join(PROMOTION_TYPE_NAMES)

_Items = dict[str, tuple[yaml.Node, yaml.Node]]
# What an action acts on: (promotion, target), exactly one set.
_Refs = tuple[PromotionRef | None, TargetRef | None]


def parse_rules(text: str, filename: str, registry: EventRegistry) -> RulesSpec:
    """Validate a rules file; raise RulesError listing every problem found."""
    reader = _Reader(filename, registry)
    spec = reader.read(text)
    if reader.problems or spec is None:
        raise RulesError(sorted(reader.problems, key=lambda p: p.line))
    return spec


class _Reader:
    """One pass over the composed document; problems accumulate instead of stopping it."""

    def __init__(self, filename: str, registry: EventRegistry) -> None:
        self.filename = filename
        self.registry = registry
        self.problems: list[RuleProblem] = []
        self.warnings: list[RuleProblem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    # -- reporting --------------------------------------------------------------------------

    def error(self, node: yaml.Node | None, message: str, rule: str | None = None) -> None:
        self.problems.append(RuleProblem(self.filename, _line(node), message, rule))

    def warn(self, node: yaml.Node | None, message: str, rule: str | None = None) -> None:
        self.warnings.append(RuleProblem(self.filename, _line(node), message, rule))

    # -- YAML shapes ------------------------------------------------------------------------

    def mapping(self, node: yaml.Node, what: str, rule: str | None = None) -> _Items | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping", rule)
            return None
        items: _Items = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_node, f"{what}: keys must be plain names", rule)
                continue
            key = str(key_node.value)
            if key in items:
                first = _line(items[key][0])
                self.error(key_node, f"{what}: duplicate key '{key}' (first on line {first})", rule)
                continue
            items[key] = (key_node, value_node)
        return items

    def known_keys(
        self, items: _Items, allowed: tuple[str, ...], what: str, rule: str | None = None
    ) -> None:
        for key, (key_node, _) in items.items():
            if key not in allowed:
                expected = ", ".join(allowed)
                self.error(key_node, f"{what}: unknown key '{key}' (expected {expected})", rule)

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _NOT_SCALAR
        return self._constructor.construct_object(node, deep=True)

    def positive_int(self, node: yaml.Node, what: str, rule: str | None = None) -> int | None:
        value = self.scalar(node)
        # bool is an int subclass: `yes` must not become promotion 1.
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        self.error(node, f"{what} must be a positive integer", rule)
        return None

    def text(self, node: yaml.Node, what: str, rule: str | None = None) -> str | None:
        value = self.scalar(node)
        if isinstance(value, str) and value.strip():
            return value.strip()
        hint = " (quote it)" if value is not _NOT_SCALAR and value is not None else ""
        self.error(node, f"{what} must be a non-empty string{hint}", rule)
        return None

    def name(self, node: yaml.Node, what: str, rule: str | None = None) -> str | None:
        value = self.text(node, what, rule)
        if value is not None and not _NAME.match(value):
            self.error(node, f"{what} '{value}' may hold only letters, digits, '_', '.', '-'", rule)
            return None
        return value

    # -- the document -----------------------------------------------------------------------

    def read(self, text: str) -> RulesSpec | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            reason = exc.problem or exc.context or "invalid YAML"
            self.problems.append(RuleProblem(self.filename, line, f"invalid YAML: {reason}"))
            return None
        except yaml.YAMLError as exc:
            self.problems.append(RuleProblem(self.filename, 1, f"invalid YAML: {exc}"))
            return None
        if root is None:
            self.problems.append(RuleProblem(self.filename, 1, "the rules file is empty"))
            return None
        top = self.mapping(root, "the rules file")
        if top is None:
            return None
        self.known_keys(top, _TOP_KEYS, "the rules file")

        program_id = None
        if "program_id" in top:
            program_id = self.positive_int(top["program_id"][1], "program_id")
        preference: tuple[IdentifierName, ...] = DEFAULT_IDENTIFIER_PREFERENCE
        if "identifier_preference" in top:
            preference = self.preference(top["identifier_preference"][1]) or preference
        promotions = self.promotions(top.get("promotions"), program_id)
        targets = self.targets(top.get("targets"), promotions)
        if "rules" not in top:
            self.error(root, "the rules file needs a 'rules' list")
            rules: tuple[RuleDef, ...] = ()
        else:
            rules = self.rules(top["rules"][1], promotions, targets, preference)
        return RulesSpec(
            filename=self.filename,
            program_id=program_id,
            promotions=promotions,
            targets=targets,
            rules=rules,
            identifier_preference=preference,
            warnings=tuple(self.warnings),
        )

    def preference(
        self, node: yaml.Node, rule: str | None = None
    ) -> tuple[IdentifierName, ...] | None:
        what = "identifier_preference"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.error(node, f"{what} must be a non-empty list of id, mobile, email", rule)
            return None
        names: list[IdentifierName] = []
        for item in node.value:
            value = self.scalar(item)
            try:
                name = IdentifierName(value)
            except ValueError:
                self.error(item, f"{what}: '{value}' is not one of id, mobile, email", rule)
                return None
            if name in names:
                self.error(item, f"{what}: '{value}' is listed twice", rule)
                return None
            names.append(name)
        return tuple(names)

    def promotions(
        self, entry: tuple[yaml.Node, yaml.Node] | None, program_id: int | None
    ) -> dict[str, PromotionDef]:
        if entry is None:
            return {}
        items = self.mapping(entry[1], "promotions")
        if items is None:
            return {}
        found: dict[str, PromotionDef] = {}
        seen: dict[tuple[int, int | str], str] = {}
        for key_node, value_node in items.values():
            name = self.name(key_node, "promotion name")
            if name is None:
                continue
            what = f"promotion '{name}'"
            definition = self.promotion(name, key_node, value_node, program_id)
            if definition is None:
                continue
            ref = definition.ref
            identity = (ref.program_id, ref.promotion_id or str(ref.promo_identifier))
            if identity in seen:
                # Two names for one promotion would put one customer twice into one call.
                self.error(
                    key_node, f"{what} is the same Capillary promotion as '{seen[identity]}'"
                )
                continue
            seen[identity] = name
            found[name] = definition
        return found

    def promotion(
        self, name: str, key_node: yaml.Node, node: yaml.Node, program_id: int | None
    ) -> PromotionDef | None:
        what = f"promotion '{name}'"
        items = self.mapping(node, what)
        if items is None:
            return None
        self.known_keys(items, _PROMOTION_KEYS, what)
        ok = True
        own_program = program_id
        if "program_id" in items:
            own_program = self.positive_int(items["program_id"][1], f"{what}: program_id")
            ok = own_program is not None
        elif program_id is None:
            self.error(node, f"{what} has no program_id (set it at the top or on the promotion)")
            ok = False
        promotion_id: int | None = None
        promo_identifier: str | None = None
        if ("promotion_id" in items) == ("promo_identifier" in items):
            self.error(node, f"{what} needs exactly one of promotion_id or promo_identifier")
            ok = False
        elif "promotion_id" in items:
            promotion_id = self.positive_int(items["promotion_id"][1], f"{what}: promotion_id")
            ok = ok and promotion_id is not None
        else:
            promo_identifier = self.text(items["promo_identifier"][1], f"{what}: promo_identifier")
            ok = ok and promo_identifier is not None
        promotion_type: PromotionType | None = None
        if "type" not in items:
            self.error(node, f"{what} needs a type ({_TYPE_NAMES})")
            ok = False
        else:
            type_node = items["type"][1]
            value = self.scalar(type_node)
            promotion_type = PROMOTION_TYPE_NAMES.get(str(value).upper())
            if promotion_type is None:
                self.error(type_node, f"{what}: unknown type '{value}' (expected {_TYPE_NAMES})")
                ok = False
        if not ok or own_program is None or promotion_type is None:
            return None
        ref = PromotionRef(own_program, promotion_id, promo_identifier, kind=promotion_type)
        return PromotionDef(name, ref, promotion_type, _line(key_node))

    def targets(
        self, entry: tuple[yaml.Node, yaml.Node] | None, promotions: Mapping[str, PromotionDef]
    ) -> dict[str, TargetDef]:
        if entry is None:
            return {}
        items = self.mapping(entry[1], "targets")
        if items is None:
            return {}
        found: dict[str, TargetDef] = {}
        seen: dict[TargetRef, str] = {}
        for key_node, value_node in items.values():
            name = self.name(key_node, "target name")
            if name is None:
                continue
            what = f"target '{name}'"
            if name in promotions:
                # Lanes and outcome records identify a subject by name alone.
                self.error(key_node, f"{what}: a promotion has the same name")
                continue
            fields = self.mapping(value_node, what)
            if fields is None:
                continue
            self.known_keys(fields, _TARGET_KEYS, what)
            ids: list[int] = []
            for key in _TARGET_KEYS:
                if key not in fields:
                    self.error(value_node, f"{what} needs {key}")
                    continue
                number = self.positive_int(fields[key][1], f"{what}: {key}")
                if number is not None:
                    ids.append(number)
            if len(ids) != len(_TARGET_KEYS):
                continue
            ref = TargetRef(ids[0], ids[1])
            if ref in seen:
                self.error(key_node, f"{what} is the same target as '{seen[ref]}'")
                continue
            seen[ref] = name
            found[name] = TargetDef(name, ref, _line(key_node))
        return found

    def rules(
        self,
        node: yaml.Node,
        promotions: Mapping[str, PromotionDef],
        targets: Mapping[str, TargetDef],
        preference: tuple[IdentifierName, ...],
    ) -> tuple[RuleDef, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "rules must be a list")
            return ()
        if not node.value:
            self.error(node, "rules: the list is empty")
            return ()
        self.duplicate_names(node)
        found = (
            self.rule(position, item, promotions, targets, preference)
            for position, item in enumerate(node.value, start=1)
        )
        rules = tuple(rule for rule in found if rule is not None)
        self.check_enrolment_revokes(rules)
        return rules

    def duplicate_names(self, node: yaml.SequenceNode) -> None:
        # Checked apart from the rules themselves, so that a duplicate is reported even when
        # one of the two rules has other problems too.
        first_line: dict[str, int] = {}
        for item in node.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            for key_node, value_node in item.value:
                if getattr(key_node, "value", None) != "name":
                    continue
                name = self.scalar(value_node)
                if not isinstance(name, str):
                    continue
                if name in first_line:
                    message = f"duplicate rule name (first on line {first_line[name]})"
                    self.error(item, message, name)
                else:
                    first_line[name] = _line(item)

    def rule(
        self,
        position: int,
        node: yaml.Node,
        promotions: Mapping[str, PromotionDef],
        targets: Mapping[str, TargetDef],
        default_preference: tuple[IdentifierName, ...],
    ) -> RuleDef | None:
        label = f"#{position}"
        items = self.mapping(node, "a rule", label)
        if items is None:
            return None
        name: str | None = None
        if "name" in items:
            name = self.name(items["name"][1], "name", label)
        else:
            self.error(node, "a rule needs a name", label)
        label = name or label
        self.known_keys(items, _RULE_KEYS, "rule", label)

        description: str | None = None
        if "description" in items:
            description = self.text(items["description"][1], "description", label)
        on: str | None = None
        if "on" in items:
            on = self.text(items["on"][1], "on", label)
        else:
            self.error(node, "a rule needs 'on' (the event type it matches)", label)
        if on is not None and on not in self.registry.types:
            self.warn(
                items["on"][1],
                f"no payload model is registered for type '{on}': its data is untyped",
                label,
            )
        preference = default_preference
        if "identifier_preference" in items:
            preference = self.preference(items["identifier_preference"][1], label) or preference
        condition = None
        condition_ok = True
        if "when" in items:
            condition = self.condition(items["when"][1], on, label)
            condition_ok = condition is not None
        actions: tuple[ActionDef, ...] = ()
        if "then" in items:
            actions = self.actions(items["then"][1], promotions, targets, label)
        else:
            self.error(node, "a rule needs 'then' (a list of actions)", label)
        if name is None or on is None or not condition_ok or not actions:
            return None
        return RuleDef(
            name=name,
            on=on,
            condition=condition,
            actions=actions,
            identifier_preference=preference,
            line=_line(node),
            description=description,
        )

    def condition(self, node: yaml.Node, on: str | None, rule: str) -> Condition | None:
        source = self.text(node, "when", rule)
        if source is None:
            return None
        condition, problems = compile_condition(source)
        for problem in problems:
            self.error(node, f"when: {problem}", rule)
        if condition is not None and on is not None:
            payload = self.registry.payload_model(on)
            for path in condition.paths:
                hint = _undeclared(path, payload)
                if hint is not None:
                    self.warn(node, f"when: {hint}", rule)
        return condition

    def actions(
        self,
        node: yaml.Node,
        promotions: Mapping[str, PromotionDef],
        targets: Mapping[str, TargetDef],
        rule: str,
    ) -> tuple[ActionDef, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.error(
                node, "then must be a non-empty list of actions like {earn: <promotion>}", rule
            )
            return ()
        found: list[ActionDef] = []
        ok = True
        for index, item in enumerate(node.value):
            action = self.action(index, item, promotions, targets, rule)
            ok = ok and action is not None
            if action is not None:
                found.append(action)
        if ok:
            ok = self.check_order(found, rule)
        return tuple(found) if ok else ()

    def action(
        self,
        index: int,
        node: yaml.Node,
        promotions: Mapping[str, PromotionDef],
        targets: Mapping[str, TargetDef],
        rule: str,
    ) -> ActionDef | None:
        items = self.mapping(node, "an action", rule)
        if items is None:
            return None
        if len(items) != 1:
            self.error(node, "an action is one key, like {earn: <promotion>}", rule)
            return None
        ((key, (key_node, value_node)),) = items.items()
        try:
            action = Action(key)
        except ValueError:
            self.error(key_node, f"unknown action '{key}' (expected {_ACTION_NAMES})", rule)
            return None
        scoped = self.subject_of(action, key, value_node, rule)
        if scoped is None:
            return None
        subject, revoke_all = scoped
        if action in TARGET_ACTIONS:
            problem, definition = self.target_action(action, subject, promotions, targets)
        else:
            problem, definition = self.promotion_action(action, subject, promotions, targets)
        if definition is None:
            self.error(node, problem, rule)
            return None
        return ActionDef(
            index, action, subject, definition[0], definition[1], _line(node), revoke_all
        )

    def subject_of(
        self, action: Action, key: str, node: yaml.Node, rule: str
    ) -> tuple[str, bool] | None:
        """The action's promotion or target, and whether a revoke_earn takes back all earns."""
        if action in {Action.REVOKE_EARN, Action.REVOKE_DIRECT_EARN} and isinstance(
            node, yaml.MappingNode
        ):
            return self.revoke_scope(node, rule)
        subject = self.text(node, key, rule)
        return None if subject is None else (subject, False)

    def revoke_scope(self, node: yaml.MappingNode, rule: str) -> tuple[str, bool] | None:
        """`{promotion: <name>, earns: order|all}`: which earns a revoke_earn takes back."""
        items = self.mapping(node, "revoke_earn", rule)
        if items is None:
            return None
        self.known_keys(items, ("promotion", "earns"), "revoke_earn", rule)
        if "promotion" not in items:
            self.error(node, "revoke_earn needs a promotion: {promotion: <name>}", rule)
            return None
        subject = self.text(items["promotion"][1], "revoke_earn promotion", rule)
        scope = "order"
        if "earns" in items:
            scope_node = items["earns"][1]
            scope = str(self.scalar(scope_node))
            if scope not in {"order", "all"}:
                self.error(
                    scope_node,
                    "revoke_earn earns must be 'order' (those of the event's order) or 'all'",
                    rule,
                )
                return None
        return None if subject is None else (subject, scope == "all")

    @staticmethod
    def target_action(
        action: Action,
        subject: str,
        promotions: Mapping[str, PromotionDef],
        targets: Mapping[str, TargetDef],
    ) -> tuple[str, _Refs | None]:
        target = targets.get(subject)
        if target is None:
            hint = " (it is a promotion)" if subject in promotions else ""
            return f"action {action.value}: unknown target '{subject}'{hint}", None
        return "", (None, target.ref)

    @staticmethod
    def promotion_action(
        action: Action,
        subject: str,
        promotions: Mapping[str, PromotionDef],
        targets: Mapping[str, TargetDef],
    ) -> tuple[str, _Refs | None]:
        promotion = promotions.get(subject)
        if promotion is None:
            hint = " (it is a target)" if subject in targets else ""
            return f"action {action.value}: unknown promotion '{subject}'{hint}", None
        if action not in ACTIONS_OF_TYPE[promotion.type]:
            kind = promotion.type.value
            return (
                f"action {action.value} is not supported by promotion '{subject}' ({kind})",
                None,
            )
        if action is Action.REVOKE_DIRECT_EARN and promotion.ref.promotion_id is None:
            # The revokeDirectEarn page documents promotionId only.
            return (
                f"action {action.value} needs promotion '{subject}' to have a promotion_id",
                None,
            )
        return "", (promotion.ref, None)

    def check_order(self, actions: list[ActionDef], rule: str) -> bool:
        # Lanes keep one rule's actions in list order, so the list order must be one the API
        # accepts: an earn needs its enrolment, and earns are revoked before the enrolment.
        ok = True
        for later_index, later in enumerate(actions):
            for earlier in actions[:later_index]:
                if earlier.subject != later.subject:
                    continue
                pair = (earlier.action, later.action)
                if pair == (Action.EARN, Action.ENROL):
                    problem = "enrol must come before earn"
                elif pair == (Action.REVOKE_ENROL, Action.REVOKE_EARN):
                    problem = "revoke_earn must come before revoke_enrol"
                else:
                    continue
                self.problems.append(
                    RuleProblem(
                        self.filename,
                        later.line,
                        f"on promotion '{later.subject}' {problem} (actions run in list order)",
                        rule,
                    )
                )
                ok = False
        return ok

    def check_enrolment_revokes(self, rules: tuple[RuleDef, ...]) -> None:
        # Capillary wants a promotion's earns revoked before its enrolment (FACTS.md). One
        # customer's commands on one promotion run in file and list order, so a revoke of the
        # earns is sure to go first only when it comes earlier in the same rule, or in an
        # earlier rule that fires whenever this one does (see _always_before).
        for position, rule in enumerate(rules):
            ahead = [before for before in rules[:position] if _always_before(before, rule)]
            for action in rule.actions:
                if action.action is not Action.REVOKE_ENROL:
                    continue
                earlier = [*rule.actions[: action.index], *(a for r in ahead for a in r.actions)]
                if any(a.subject == action.subject and a.action in _EARN_REVOKES for a in earlier):
                    continue
                self.warnings.append(
                    RuleProblem(
                        self.filename,
                        action.line,
                        f"revoke_enrol on promotion '{action.subject}' has no revoke_earn or"
                        " revoke_direct_earn of it before it: Capillary wants the earns revoked"
                        " before the enrolment (put one earlier in this rule)",
                        rule.name,
                    )
                )


_EARN_REVOKES: Final = frozenset({Action.REVOKE_EARN, Action.REVOKE_DIRECT_EARN})


def _always_before(before: RuleDef, rule: RuleDef) -> bool:
    """Whether `before`'s commands run ahead of `rule`'s on every event `rule` matches.

    Same event type, a condition that holds whenever `rule`'s does (none, or the same text),
    and the same identifier preference, so that both commands land in one customer lane.
    """
    same_condition = before.condition is None or (
        rule.condition is not None and before.condition.source == rule.condition.source
    )
    return (
        before.on == rule.on
        and same_condition
        and before.identifier_preference == rule.identifier_preference
    )


class _NotScalar:
    """Marks a value that was a mapping or list where a scalar was expected."""

    def __repr__(self) -> str:
        return "a mapping or list"


_NOT_SCALAR: Final = _NotScalar()


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def _undeclared(path: Path, payload: type[BaseModel]) -> str | None:
    """Why a condition path is suspicious for this payload model, or None if it is declared."""
    if not path:
        return None
    head = path[0]
    if head != "data":
        if head in CloudEvent.model_fields:
            return None
        return (
            f"{ROOT_VARIABLE}.{head} is not a CloudEvents attribute; only events that carry"
            " it as an extension attribute can match"
        )
    # Walk declared fields down through nested models and list elements; anything untyped
    # (generic payloads, dict fields, scalars) ends the walk without a finding.
    current: Any = None if payload is GenericPayload else payload
    for depth, segment in enumerate(path[1:], start=1):
        if segment == ELEMENTS:
            current = _element_of(current)
            continue
        model = _model_of(current)
        if model is None:
            break
        field = model.model_fields.get(segment)
        if field is None:
            shown = ".".join((ROOT_VARIABLE, *path[: depth + 1])).replace(".*", "[*]")
            return (
                f"{shown} is not a declared field; only events that carry it as an extra"
                " field can match"
            )
        current = field.annotation
    return None


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (through Optional), or None."""
    annotation = _unwrap_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _element_of(annotation: Any) -> Any:
    """The element annotation of a list annotation (through Optional), or None."""
    annotation = _unwrap_optional(annotation)
    if typing.get_origin(annotation) in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(annotation)
        return args[0] if args else None
    return None
