"""What one chaos experiment saw: its state while it runs (Trial) and its figures (Figures).

Figures come from the outside only: the outcomes topic read back with read_committed, the
simulator's ledger of side effects, the group's committed offsets against the end offsets, and
the service instances' logs. Nothing asks the service what it thinks it did.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from chaos_rig import COMMANDS_PER_EVENT, OUTCOMES_TOPIC, RULE_NAME, Rig, say
from kafka_tools import ReadRecord, read_to_end
from promo_bridge.domain.rules import command_id

# Longest wait for an instance to drain and exit on SIGTERM: the service's default drain
# timeout (20 s) plus a margin for leaving the group and closing.
STOP_TIMEOUT_S = 35.0
READ_TIMEOUT_S = 180.0
NOTED_LEVELS = ("warning", "error", "critical")


@dataclass
class Trial:
    """An experiment under way: what it produced, when it ran, what it noticed."""

    name: str
    rig: Rig
    events: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    committed_end: bool | None = None

    def start_clock(self) -> None:
        """Mark the moment the service is first let loose on the events."""
        if self.started_at is None:
            self.started_at = time.monotonic()

    def note(self, message: str) -> None:
        """Remember (and show) something the figures alone would not tell."""
        self.notes.append(message)
        say(self.name, message)

    async def settle(self, timeout_s: float) -> None:
        """Wait until the group caught up (or `timeout_s` passed) and stop the clock there."""
        caught_up = await self.rig.wait_caught_up(timeout_s)
        self.finished_at = time.monotonic()
        self.committed_end = caught_up
        if not caught_up:
            self.note(f"not caught up within {timeout_s:g} s")


@dataclass
class Figures:
    """The one line of figures an experiment prints."""

    name: str
    events: int
    commands: int
    lost: int | None
    dup_effects: dict[str, int]
    dup_outcomes: int | None
    committed_end: bool
    time_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """`name events=... commands=... lost=... ...`; `?` where nothing could be measured."""
        effects = ",".join(f"{a}:{n}" for a, n in sorted(self.dup_effects.items())) or "0"
        figures = [
            f"{self.name:<13}",
            f"events={self.events}",
            f"commands={self.commands}",
            f"lost={_or_unknown(self.lost)}",
            f"dup_effects={effects}",
            f"dup_outcomes={_or_unknown(self.dup_outcomes)}",
            f"committed=end:{'yes' if self.committed_end else 'no'}",
            f"time_s={self.time_s:.1f}",
        ]
        if self.extra:
            figures.append("| " + " ".join(f"{k}={_text(v)}" for k, v in self.extra.items()))
        return " ".join(figures)

    def passed(self, strict: bool) -> bool:
        """Nothing lost and caught up; with `strict`, no duplicate EARN or outcome record either."""
        ok = self.lost == 0 and self.committed_end
        if strict:
            ok = ok and not self.dup_effects.get("EARN") and self.dup_outcomes == 0
        return ok


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def expected_command_ids(events: list[dict[str, Any]]) -> set[str]:
    """The command_ids the chaos rules make for `events`."""
    return {
        command_id(str(event["id"]), RULE_NAME, index)
        for event in events
        for index in range(COMMANDS_PER_EVENT)
    }


def duplicate_effects(ledger: dict[str, Any]) -> dict[str, int]:
    """Side effects beyond the first per (customer, subject, action), by action."""
    extra: Counter[str] = Counter()
    for duplicate in ledger["duplicates"]:
        extra[duplicate["action"]] += int(duplicate["count"]) - 1
    return dict(extra)


def log_summary(trial: Trial) -> Counter[str]:
    """Warnings and errors of every instance's log, counted by level and event."""
    counts: Counter[str] = Counter()
    for child in trial.rig.services:
        for entry in child.log_entries():
            level = str(entry.get("level", ""))
            if level in NOTED_LEVELS:
                counts[f"{level}: {str(entry.get('event'))[:100]}"] += 1
    return counts


async def stop_services(trial: Trial) -> None:
    """SIGTERM every live instance and note those that exit badly or not at all."""
    for child in trial.rig.live_services():
        code = await trial.rig.terminate(child, STOP_TIMEOUT_S)
        if code is None:
            trial.note(f"service-{child.number} still running {STOP_TIMEOUT_S:g} s after SIGTERM")
            trial.rig.kill(child)
        elif code != 0:
            trial.note(f"service-{child.number} exited with {code} on SIGTERM")


async def _committed_end(trial: Trial) -> bool:
    """Committed = end now; False (noted) when the broker cannot tell."""
    try:
        return await trial.rig.committed_equals_end()
    except (KafkaError, OSError) as exc:
        trial.note(f"committed offsets unknown: {exc!r}")
        return False


async def _outcomes(trial: Trial) -> list[ReadRecord] | None:
    """Every outcome record (read_committed), or None (noted) when it cannot be read."""
    try:
        return await read_to_end(
            trial.rig.broker.bootstrap, OUTCOMES_TOPIC, timeout_s=READ_TIMEOUT_S
        )
    except (KafkaError, OSError) as exc:
        trial.note(f"outcomes unreadable: {exc!r}")
        return None


async def measure(trial: Trial) -> Figures:
    """Stop the instances, then read the outcomes, the ledger and the offsets; the figures."""
    rig = trial.rig
    finished_at = trial.finished_at or time.monotonic()
    committed_end = trial.committed_end
    if committed_end is None:
        committed_end = await _committed_end(trial)
    await stop_services(trial)
    expected = expected_command_ids(trial.events)
    records = await _outcomes(trial)
    per_command = Counter(r.json()["command_id"] for r in records or ())
    statuses = Counter(r.json()["status"] for r in records or ())
    ledger = await rig.admin("ledger?limit=0")
    figures = Figures(
        name=trial.name,
        events=len(trial.events),
        commands=len(expected),
        lost=None if records is None else len(expected - per_command.keys()),
        dup_effects=duplicate_effects(ledger),
        dup_outcomes=None if records is None else sum(n - 1 for n in per_command.values()),
        committed_end=committed_end,
        time_s=finished_at - (trial.started_at or finished_at),
        extra={**trial.extra, "statuses": dict(statuses)},
    )
    logs = log_summary(trial)
    for line, count in logs.most_common(6):
        say(trial.name, f"log {count}x {line}")
    summary = {
        "figures": asdict(figures),
        "notes": trial.notes,
        "effects": ledger["totals"],
        "simulator": await rig.admin("stats"),
        "log_warnings_and_errors": dict(logs.most_common()),
    }
    (rig.directory / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    # Every API call (time, endpoint, bulkAction, customers, fault): the timeline behind them.
    calls = (await rig.admin("calls"))["calls"]
    (rig.directory / "calls.json").write_text(json.dumps(calls, default=str))
    return figures


def unmeasured(trial: Trial, reason: str) -> Figures:
    """The figures of an experiment whose measurement failed: unknowns and what was known."""
    trial.note(f"measurement failed: {reason}")
    finished_at = trial.finished_at or time.monotonic()
    return Figures(
        name=trial.name,
        events=len(trial.events),
        commands=len(trial.events) * COMMANDS_PER_EVENT,
        lost=None,
        dup_effects={},
        dup_outcomes=None,
        committed_end=bool(trial.committed_end),
        time_s=finished_at - (trial.started_at or finished_at),
        extra=trial.extra,
    )
