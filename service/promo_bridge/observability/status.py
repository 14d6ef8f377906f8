"""The read-only status page: one snapshot of the running service, as HTML and as JSON.

The page is built here from plain values handed in by the runtime, so this module knows no
Kafka, Capillary or pipeline code. Event values are producers' data: everything shown is
escaped, and nothing identifying a customer is part of the snapshot at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from html import escape
from typing import Any

# Enough to see a pattern in what went wrong; old entries fall off.
RECENT_LIMIT = 20
REFRESH_S = 5


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """An assigned input partition; offsets are None until the consumer knows them."""

    topic: str
    partition: int
    highwater: int | None
    committed: int | None
    paused: bool

    @property
    def lag(self) -> int | None:
        if self.highwater is None or self.committed is None:
            return None
        return max(0, self.highwater - self.committed)


@dataclass(frozen=True, slots=True)
class OutcomeNote:
    """A command that was not simply applied (no customer identifier: the page is shared)."""

    command_id: str
    rule: str
    action: str
    status: str
    reason: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterNote:
    """Where a record sent to the DLQ came from, and why."""

    topic: str
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """Calls counted against an endpoint's budget in the current window, out of its limit."""

    endpoint: str
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything the page shows, taken at one moment."""

    ready: bool
    checks: Mapping[str, bool]
    pause_reason: str | None
    pending: int
    pending_dead_letter_bytes: int
    partitions: Sequence[PartitionStatus] = ()
    budgets: Sequence[BudgetUse] = ()
    recent_outcomes: Sequence[OutcomeNote] = ()
    recent_dead_letters: Sequence[DeadLetterNote] = ()


def status_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    """The snapshot as JSON-ready data: what the page shows, lag included."""
    data = asdict(snapshot)
    data["checks"] = dict(snapshot.checks)
    data["partitions"] = [{**asdict(p), "lag": p.lag} for p in snapshot.partitions]
    return data


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f3f3f3}.num{text-align:right}.ok{color:#176a1d}.bad{color:#b3261e;font-weight:bold}
.empty{color:#777;font-style:italic}
"""


def render_html(snapshot: StatusSnapshot) -> str:
    """The status page: server-rendered, self-contained, refreshing itself."""
    pause = snapshot.pause_reason
    sections = [
        "<h1>promo-bridge status</h1>",
        _summary(snapshot, pause),
        "<h2>Readiness</h2>",
        _table(
            ("check", "state"),
            [(name, _flag(ok)) for name, ok in snapshot.checks.items()],
            "no checks",
            raw_columns={1},
        ),
        "<h2>Assigned partitions</h2>",
        _table(
            ("topic", "partition", "highwater", "committed", "lag", "paused"),
            [
                (p.topic, p.partition, p.highwater, p.committed, p.lag, "yes" if p.paused else "")
                for p in snapshot.partitions
            ],
            "no partitions assigned",
            numeric={1, 2, 3, 4},
            row_ids=[f"partition-{p.topic}-{p.partition}" for p in snapshot.partitions],
        ),
        "<h2>Call budget (current window)</h2>",
        _table(
            ("endpoint", "used", "limit"),
            [(b.endpoint, b.used, b.limit) for b in snapshot.budgets],
            "no budget figures",
            numeric={1, 2},
        ),
        f"<h2>Recent non-applied outcomes (last {RECENT_LIMIT})</h2>",
        _table(
            ("command_id", "rule", "action", "status", "reason", "error_message"),
            [
                (o.command_id, o.rule, o.action, o.status, o.reason, o.error_message)
                for o in reversed(snapshot.recent_outcomes)
            ],
            "none",
        ),
        f"<h2>Recent DLQ records (last {RECENT_LIMIT})</h2>",
        _table(
            ("topic", "partition", "offset", "reason"),
            [
                (d.topic, d.partition, d.offset, d.reason)
                for d in reversed(snapshot.recent_dead_letters)
            ],
            "none",
            numeric={1, 2},
        ),
    ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>promo-bridge status</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _summary(snapshot: StatusSnapshot, pause: str | None) -> str:
    rows = [
        ("ready", _flag(snapshot.ready)),
        ("pending", f'<span id="pending">{snapshot.pending}</span>'),
        (
            "pending DLQ bytes",
            f'<span id="pending-dlq-bytes">{snapshot.pending_dead_letter_bytes}</span>',
        ),
        (
            "paused",
            '<span class="ok">no</span>'
            if pause is None
            else f'<span class="bad" id="pause-reason">yes: {escape(pause)}</span>',
        ),
    ]
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="summary">{cells}</table>'


def _flag(ok: bool) -> str:
    return '<span class="ok">yes</span>' if ok else '<span class="bad">no</span>'


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    empty: str,
    *,
    numeric: frozenset[int] | set[int] = frozenset(),
    raw_columns: frozenset[int] | set[int] = frozenset(),
    row_ids: Sequence[str] | None = None,
) -> str:
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = [f"<table><tr>{head}</tr>"]
    for index, row in enumerate(rows):
        cells = "".join(
            _cell(value, numeric=i in numeric, raw=i in raw_columns) for i, value in enumerate(row)
        )
        row_id = f' id="{escape(row_ids[index])}"' if row_ids is not None else ""
        lines.append(f"<tr{row_id}>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _cell(value: object, *, numeric: bool, raw: bool) -> str:
    # Only markup made here is passed raw; every value from outside is escaped.
    text = "—" if value is None else str(value) if raw else escape(str(value))
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{text}</td>"
