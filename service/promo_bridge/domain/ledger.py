"""The holdings ledger: what this service did to each customer's promotion, and what is in flight.

Per customer and promotion (a "holding") the ledger keeps the earnedIds that this service's
EARN commands produced (and which of them it revoked), per order what it earned (when the rules
revoke by order), and the intents: commands whose call may have gone out and whose result is not
known yet. It is the state behind two guarantees:

- an intent is durable before its call goes out, so after a crash (or an answer lost to a
  timeout) the command is verified with the customer lookup before anything is resent;
- an EARN shown by the lookup is attributed to the intent only when the earnedId is one this
  service did not record before: the ledger tells "ours, already known" from "new".

The ledger lives in Kafka, in the state partition numbered like the input partition of the
command (co-partitioned like the outcomes), read back whole when a partition is assigned:

- one compacted record per holding with something in it, keyed by the holding; holdings idle
  for longer than the retention are dropped with a tombstone, and so is a holding left with
  nothing in it (an ENROL settled: the lookup, not the ledger, tells an enrolment);
- one record per request and partition for the intents it carries (an *intent group*, keyed
  `intents␟<id>`), with a tombstone once every one of them is settled. A stream of enrolments
  thus costs two small records per request and partition, not two per command, and no memory.

Versions before intent groups kept a holding's intents in its own record ("n"): those are still
read, and closed by rewriting the holding. Pure: time is a parameter, records are values.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from promo_bridge.domain._values import value
from promo_bridge.domain.commands import Action, Command
from promo_bridge.domain.outcomes import CommandResult, OutcomeStatus
from promo_bridge.domain.restore import RestoredOutcome

HoldingKey = tuple[str, str, str]

# Actions whose repetition would repeat a side effect the API cannot tell from a new one:
# they get an intent before their call, and are verified by lookup when their fate is unknown.
VERIFIED_ACTIONS: Final = frozenset({Action.ENROL, Action.EARN})

_SEP: Final = "\x1f"
_APPLIED: Final = frozenset({OutcomeStatus.APPLIED, OutcomeStatus.ALREADY_APPLIED})
# Revokes that take back what the event's order earned (their earnIds come from the ledger).
ORDER_REVOKES: Final = frozenset({Action.REVOKE_EARN, Action.REVOKE_DIRECT_EARN})
# A revoke_earn in these states means the order is returned (sent, or nothing to send).
_SETTLED_RETURN: Final = _APPLIED | {OutcomeStatus.SKIPPED}


def holding_key(command: Command) -> HoldingKey:
    """The holding a command acts on: the customer and the promotion as the API knows it.

    The customer is the record key when there is one (whichever identifier the rule sends).
    """
    if command.customer_key:
        return ("key", command.customer_key, command.subject_label)
    return (command.identifier_name.value, command.identifier_value, command.subject_label)


def encode_key(key: HoldingKey) -> bytes:
    """The state record key of a holding."""
    return _key_text(key).encode()


def _key_text(key: HoldingKey) -> str:
    # As an intent group names the holding of each of its intents (text inside JSON).
    return _SEP.join(key)


_GROUP_PREFIX: Final = b"intents" + _SEP.encode()


def decode_key(raw: bytes) -> HoldingKey | None:
    """A holding key from a state record key; None for a key that is not one."""
    parts = raw.decode(errors="replace").split(_SEP)
    if len(parts) != 3:
        return None
    return (parts[0], parts[1], parts[2])


@value
class Intent:
    """A command whose call may have gone out, without a known result."""

    action: Action
    at_ms: int
    # The key of the intent group record that holds it; None: in the holding's own record (as
    # versions before intent groups wrote it).
    group: bytes | None = None


@dataclass(slots=True)
class Holding:
    """One customer's standing in one promotion, as far as this service made it."""

    # The earnedIds this service's EARNs produced, and those it revoked.
    # Tuples: a handful of ids each, and a replica holds hundreds of thousands of holdings (a
    # set of five costs 700 bytes, a tuple 80; an empty tuple is shared).
    earned: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    intents: dict[str, Intent] = field(default_factory=dict)
    # Per order (`data.order_id`) whose commands touched this holding: the earnedIds it earned.
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Orders returned (a revoke_earn for them was settled), with when.
    returned: dict[str, int] = field(default_factory=dict)
    seen_ms: int = 0
    # Whether the state topic holds a record of this holding (not a tombstone): only then does
    # one left blank need a tombstone. Not part of the record.
    stored: bool = False

    @property
    def blank(self) -> bool:
        """No content for its own record (intents aside): a tombstone if one is stored."""
        return not (self.earned or self.revoked or self.orders or self.returned)

    @property
    def empty(self) -> bool:
        """Nothing a decision reads: dropped from memory."""
        return self.blank and not self.intents

    def encode(self) -> bytes:
        """The state record value."""
        body: dict[str, Any] = {"t": self.seen_ms}
        if self.earned:
            body["e"] = sorted(self.earned)
        if self.revoked:
            body["r"] = sorted(self.revoked)
        legacy = {cid: i for cid, i in self.intents.items() if i.group is None}
        if legacy:
            body["n"] = {cid: [i.action.value, i.at_ms] for cid, i in legacy.items()}
        if self.orders:
            body["o"] = self.orders
        if self.returned:
            body["x"] = self.returned
        return orjson.dumps(body)

    @classmethod
    def decode(cls, raw: bytes) -> Holding:
        """A holding from its state record value; ValueError when it is not one."""
        try:
            body = orjson.loads(raw)
            # One string per earnedId, shared by `earned`, `revoked` and `orders`.
            ids: dict[str, str] = {}

            def one(value: object) -> str:
                text = str(value)
                return ids.setdefault(text, text)

            # Records of earlier versions may carry "i", an issualId: nothing reads it now.
            return cls(
                # A list; a mapping (earnedId -> command id) in records of an earlier version.
                earned=tuple(one(e) for e in body.get("e", ())),
                revoked=tuple(one(r) for r in body.get("r", ())),
                intents={
                    str(cid): Intent(Action(action), int(at_ms))
                    for cid, (action, at_ms) in body.get("n", {}).items()
                },
                orders={str(o): tuple(one(e) for e in got) for o, got in body.get("o", {}).items()},
                returned={str(o): int(at) for o, at in body.get("x", {}).items()},
                seen_ms=int(body.get("t", 0)),
            )
        except (TypeError, AttributeError, KeyError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a holding: {exc}") from None


@value
class StateRecord:
    """A record for the state topic: partition, key, and value (None: a tombstone)."""

    partition: int
    key: bytes
    value: bytes | None


class Ledger:
    """Holdings per state partition; see the module docstring."""

    def __init__(
        self, *, track_orders: bool = True, id_factory: Callable[[], str] | None = None
    ) -> None:
        self._partitions: dict[int, dict[HoldingKey, Holding]] = {}
        # Whether the rules revoke by order; if not, what each order earned is never read.
        self._track_orders = track_orders
        # Open intents of each intent group record, by (state partition, group key). Ids must
        # not repeat across processes: a group left open by a crash is still on the topic.
        self._groups: dict[tuple[int, bytes], set[str]] = {}
        self._new_id = id_factory or (lambda: uuid.uuid4().hex)

    # -- reading --------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(holdings) for holdings in self._partitions.values())

    def loaded(self, partition: int) -> bool:
        """Whether the state partition was read back (or started empty) here."""
        return partition in self._partitions

    def known_earned(self, command: Command) -> frozenset[str]:
        """The earnedIds this service recorded for the command's holding (revoked ones too)."""
        holding = self._holding(command, holding_key(command), create=False)
        return frozenset(holding.earned) if holding else frozenset()

    def order_earns(self, command: Command) -> list[str] | None:
        """The earnedIds of the command's order in its holding not revoked yet; None: unknown.

        An order is known to a holding once one of its commands settled there.
        """
        holding = self._holding(command, holding_key(command), create=False)
        if holding is None or command.order_id not in holding.orders:
            return None
        return [e for e in holding.orders[command.order_id] if e not in holding.revoked]

    def order_returned(self, command: Command) -> bool:
        """Whether the command's order was returned (its revoke_earn settled) in this holding."""
        holding = self._holding(command, holding_key(command), create=False)
        return holding is not None and command.order_id in holding.returned

    def open_intents(self, partition: int) -> dict[str, Intent]:
        """Intents without a result in a state partition, by command_id."""
        return {
            command_id: intent
            for holding in self._partitions.get(partition, {}).values()
            for command_id, intent in holding.intents.items()
        }

    # -- changes --------------------------------------------------------------------------

    def intend(self, commands: Iterable[Command], now_ms: int) -> list[StateRecord]:
        """Record intents for the commands that need one; the records to write before calling.

        One intent group record per state partition of the commands (a request's worth).
        """
        group = _GROUP_PREFIX + self._new_id().encode()
        entries: dict[int, dict[str, tuple[str, str]]] = {}
        touched: dict[tuple[int, HoldingKey], Holding] = {}
        superseded: list[StateRecord] = []
        # Holdings whose own record held the superseded intent (an earlier version's).
        rewrite: dict[tuple[int, HoldingKey], Holding] = {}
        for command in commands:
            if command.action not in VERIFIED_ACTIONS:
                continue
            partition = command.position.partition
            key = holding_key(command)
            holding = self._holding(command, key, create=True)
            assert holding is not None
            command_id = command.command_id
            previous = holding.intents.get(command_id)
            if previous is not None:
                # Sent again (after a verification found nothing): the new group holds it.
                superseded.extend(self._leave((partition, key), command_id, previous, rewrite))
            holding.intents[command_id] = Intent(command.action, now_ms, group)
            entries.setdefault(partition, {})[command_id] = (command.action.value, _key_text(key))
            touched[(partition, key)] = holding
        self._touch(touched, now_ms)
        records = []
        for partition, members in entries.items():
            self._groups[(partition, group)] = set(members)
            body = orjson.dumps({"t": now_ms, "c": members})
            records.append(StateRecord(partition, group, body))
        return records + superseded + self._records(rewrite)

    def settle(
        self, settled: Iterable[tuple[Command, CommandResult]], now_ms: int
    ) -> list[StateRecord]:
        """Fold final results in; the records to write with their outcomes."""
        changed: dict[tuple[int, HoldingKey], Holding] = {}
        closed: list[StateRecord] = []
        for command, result in settled:
            partition = command.position.partition
            key = holding_key(command)
            holding = self._holding(command, key, create=_changes_holding(command, result))
            if holding is None:
                continue
            intent = holding.intents.pop(command.command_id, None)
            if intent is not None:
                closed.extend(self._leave((partition, key), command.command_id, intent, changed))
            if _apply(holding, command, result, now_ms, track_orders=self._track_orders):
                changed[(partition, key)] = holding
            elif holding.empty and (partition, key) not in changed:
                # Made for a result that left nothing to keep, or its intent was all it held.
                self._partitions[partition].pop(key, None)
        self._touch(changed, now_ms)
        # Holdings before the groups they close: a crash in between leaves an intent open,
        # which the outcome read back closes, rather than a result without its holding.
        return self._records(changed) + closed

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Load a state partition read back whole (last record per key wins); returns holdings.

        Records that are not holdings (damaged, or written by something else) are skipped.
        """
        holdings: dict[HoldingKey, Holding] = {}
        groups: dict[bytes, bytes | None] = {}
        for raw_key, raw_value in records:
            if raw_key.startswith(_GROUP_PREFIX):
                groups[raw_key] = raw_value
                continue
            key = decode_key(raw_key)
            if key is None:
                continue
            if raw_value is None:
                holdings.pop(key, None)
                continue
            try:
                holding = Holding.decode(raw_value)
            except ValueError:
                continue
            if holding.empty:
                holdings.pop(key, None)
            else:
                holding.stored = True
                holdings[key] = holding
        for group, raw_group in groups.items():
            if raw_group is not None:
                self._restore_group(partition, group, raw_group, holdings)
        # In the order `expire` relies on: the topic's order is the writers', whose clocks differ.
        self._partitions[partition] = dict(sorted(holdings.items(), key=_seen_ms))
        return len(holdings)

    def _restore_group(
        self, partition: int, group: bytes, raw: bytes, holdings: dict[HoldingKey, Holding]
    ) -> None:
        """An intent group read back: its intents are open (a damaged one is skipped)."""
        try:
            body = orjson.loads(raw)
            at_ms = int(body["t"])
            found = [
                (str(cid), Action(action), decode_key(str(key).encode()))
                for cid, (action, key) in body["c"].items()
            ]
        except (TypeError, AttributeError, KeyError, ValueError, orjson.JSONDecodeError):
            return
        members = set()
        for command_id, action, key in found:
            if key is None:
                continue
            holding = holdings.get(key)
            if holding is None:
                holding = holdings[key] = Holding(seen_ms=at_ms)
            holding.intents[command_id] = Intent(action, at_ms, group)
            members.add(command_id)
        if members:
            self._groups[(partition, group)] = members

    def settle_restored(
        self, partition: int, outcomes: Iterable[RestoredOutcome], now_ms: int
    ) -> list[StateRecord]:
        """Close the intents whose outcomes were read back (the process died in between)."""
        holdings = self._partitions.get(partition, {})
        by_command = {
            command_id: (key, holding)
            for key, holding in holdings.items()
            for command_id in holding.intents
        }
        changed: dict[tuple[int, HoldingKey], Holding] = {}
        closed: list[StateRecord] = []
        for outcome in outcomes:
            found = by_command.get(outcome.command_id)
            if found is None:
                continue
            key, holding = found
            intent = holding.intents.pop(outcome.command_id)
            closed.extend(self._leave((partition, key), outcome.command_id, intent, changed))
            effect = False
            if outcome.status in _APPLIED:
                order_id = outcome.order_id if self._track_orders else None
                effect = _record_effect(holding, intent.action, order_id, outcome.earned_id)
            if effect:
                changed[(partition, key)] = holding
            elif holding.empty and (partition, key) not in changed:
                holdings.pop(key, None)
        self._touch(changed, now_ms)
        return self._records(changed) + closed

    def start_empty(self, partition: int) -> None:
        """A state partition with nothing to read back (e.g. the ledger is not kept durably)."""
        self._partitions.setdefault(partition, {})

    def forget(self, partition: int) -> None:
        """This instance no longer owns any input partition with this number."""
        self._partitions.pop(partition, None)
        for group in [group for group in self._groups if group[0] == partition]:
            del self._groups[group]

    def expire(self, now_ms: int, retention_ms: int) -> list[StateRecord]:
        """Drop holdings idle for longer than the retention (never one with an open intent).

        Holdings are kept in the order they were last changed (`_touch`), so this looks at the
        idle ones only and stops at the first recent one: it runs with every commit, and a scan
        of a million holdings would hold the event loop for a tenth of a second each time.
        """
        tombstones: list[StateRecord] = []
        for partition, holdings in self._partitions.items():
            idle = []
            for key, holding in holdings.items():
                if now_ms - holding.seen_ms <= retention_ms:
                    break
                if not holding.intents:
                    idle.append(key)
            tombstones.extend(
                StateRecord(partition, encode_key(key), None)
                for key in idle
                if holdings.pop(key).stored
            )
        return tombstones

    # -- internals ------------------------------------------------------------------------

    def _records(self, changed: Mapping[tuple[int, HoldingKey], Holding]) -> list[StateRecord]:
        """The changed holdings' records; a blank one gets a tombstone if one is stored.

        An empty one (no open intent either) is dropped from memory.
        """
        records = []
        for (partition, key), holding in changed.items():
            if holding.empty:
                self._partitions[partition].pop(key, None)
            if not holding.blank:
                holding.stored = True
                records.append(StateRecord(partition, encode_key(key), holding.encode()))
            elif holding.stored:
                holding.stored = False
                records.append(StateRecord(partition, encode_key(key), None))
        return records

    def _leave(
        self,
        at: tuple[int, HoldingKey],
        command_id: str,
        intent: Intent,
        changed: dict[tuple[int, HoldingKey], Holding],
    ) -> list[StateRecord]:
        """An intent is closed or superseded: its group's tombstone once the group is done.

        An intent of the holding's own record (an earlier version's) needs the holding
        rewritten instead: it joins `changed`.
        """
        partition, key = at
        if intent.group is None:
            holding = self._partitions[partition][key]
            if holding.stored:
                changed[at] = holding
            return []
        members = self._groups.get((partition, intent.group))
        if members is None:
            return []
        members.discard(command_id)
        if members:
            return []
        del self._groups[(partition, intent.group)]
        return [StateRecord(partition, intent.group, None)]

    def _touch(self, changed: Mapping[tuple[int, HoldingKey], Holding], now_ms: int) -> None:
        """Mark holdings changed now: moved to the end, the order `expire` relies on."""
        for (partition, key), holding in changed.items():
            holding.seen_ms = now_ms
            holdings = self._partitions[partition]
            del holdings[key]
            holdings[key] = holding

    def _holding(self, command: Command, key: HoldingKey, *, create: bool) -> Holding | None:
        holdings = self._partitions.get(command.position.partition)
        if holdings is None:
            if not create:
                return None
            # A command of a partition whose state was not read back (e.g. tests, replays).
            holdings = self._partitions.setdefault(command.position.partition, {})
        holding = holdings.get(key)
        if holding is None and create:
            holding = holdings[key] = Holding()
        return holding


def _changes_holding(command: Command, result: CommandResult) -> bool:
    if command.action in ORDER_REVOKES and command.order_id is not None:
        # A return settled, sent or not: a later earn of that order must not go out.
        return result.status in _SETTLED_RETURN
    if result.status not in _APPLIED:
        return False
    return command.action in {Action.ENROL, Action.EARN} or bool(
        result.revoked_earn_ids or result.revoked_issual_id
    )


def _apply(
    holding: Holding, command: Command, result: CommandResult, now_ms: int, *, track_orders: bool
) -> bool:
    """Fold one result into its holding (its intent already closed); whether its record changed."""
    changed = False
    order = command.order_id
    returns = command.action in ORDER_REVOKES and result.status in _SETTLED_RETURN
    if order is not None and returns and order not in holding.returned:
        holding.returned[order] = now_ms
        changed = True
    if result.status not in _APPLIED:
        return changed
    action = command.action
    # The earnIds a revoke carried are gone once it applied (or was already applied).
    sent_ids = command.earn_ids if action in ORDER_REVOKES else ()
    if action in VERIFIED_ACTIONS:
        effect = _record_effect(holding, action, order if track_orders else None, result.earned_id)
        changed = effect or changed
    revoked = {str(earn_id) for earn_id in (*result.revoked_earn_ids, *sent_ids)}
    revoked -= set(holding.revoked)
    holding.revoked = (*holding.revoked, *sorted(revoked))
    return changed or bool(revoked)


def _record_effect(
    holding: Holding,
    action: Action,
    order_id: str | None,
    earned_id: str | None,
) -> bool:
    """What an applied ENROL or EARN made (answered, or read back); whether anything changed.

    The order is recorded even when it earned nothing here, so that a return of it is known.
    """
    changed = False
    if order_id is not None:
        earned = holding.orders.get(order_id, ())
        if action is Action.EARN and earned_id:
            earned = _with(earned, earned_id)
        holding.orders[order_id] = earned
        changed = True
    if action is Action.EARN and earned_id:
        holding.earned = _with(holding.earned, earned_id)
        changed = True
    return changed


def _seen_ms(item: tuple[HoldingKey, Holding]) -> int:
    return item[1].seen_ms


def _with(ids: tuple[str, ...], new: str) -> tuple[str, ...]:
    return ids if new in ids else (*ids, new)
