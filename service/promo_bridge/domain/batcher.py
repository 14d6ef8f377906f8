"""The micro-batcher: coalesces commands into bulk calls without breaking per-lane order.

Modeled on aiokafka's MessageAccumulator, but pure: no I/O, no timers, no asyncio. Every method
that depends on time takes `now` (seconds on one monotonic clock), so the runtime drives it with
its clock and tests with plain numbers.

Two structures hold a command:
- its lane (a FIFO per `Command.lane_key`, i.e. per customer and promotion or target): only the
  lane's head may be bucketed or in flight, so a lane's commands run strictly one after another
  and a customer appears at most once in a call;
- its bucket (per `Command.batch_key`), while it is a head waiting to be sent. A bucket flushes
  when it holds the endpoint's limit ("size") or when its oldest command has waited the window
  ("window"); `flush_all` empties buckets regardless of age ("flush", or the other reason when
  it also applies).

When a head completes, the lane's next command enters its bucket with its ORIGINAL enqueue
time: it has already waited, so it may flush at once. Requeued commands keep their time too.
Buckets stay sorted by enqueue time, so the oldest commands always leave first.

Duplicates: a command whose command_id is pending (bucketed, waiting in a lane, or in flight) is
refused by `add`, and so is one completed recently (the last `completed_memory` completions):
a redelivered event then causes no second API call. Beyond that memory a very late redelivery
is accepted again; the offset watermark makes that window small (only events read after their
commands completed but before the commit).
"""

from __future__ import annotations

import bisect
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from promo_bridge.domain._recent import RecentMap
from promo_bridge.domain.commands import DEFAULT_BATCH_LIMITS, Batch, BatchKey, Command, Endpoint

DEFAULT_WINDOW_MS: Final = 200
DEFAULT_COMPLETED_MEMORY: Final = 65_536

LaneKey = tuple[str, str, str]
CommandFilter = Callable[[Command], bool]


class _State(Enum):
    WAITING = "waiting"  # in its lane, behind the head
    BUCKETED = "bucketed"  # a head, in its bucket
    IN_FLIGHT = "in_flight"  # a head, handed out in a batch


@dataclass(slots=True, eq=False)
class _Entry:
    command: Command
    enqueued_at: float
    # Tie-breaker for equal times: arrival order.
    seq: int
    state: _State
    # Computed once: both are dataclass constructions on Command.
    lane: LaneKey
    key: BatchKey


def _order(entry: _Entry) -> tuple[float, int]:
    return (entry.enqueued_at, entry.seq)


class MicroBatcher:
    """Buckets per batch key, lanes per (customer, subject); see the module docstring."""

    def __init__(
        self,
        limits: Mapping[Endpoint, int] = DEFAULT_BATCH_LIMITS,
        window_ms: int = DEFAULT_WINDOW_MS,
        *,
        id_factory: Callable[[], str] | None = None,
        completed_memory: int = DEFAULT_COMPLETED_MEMORY,
    ) -> None:
        """`limits` may name only some endpoints; the others keep DEFAULT_BATCH_LIMITS."""
        merged = {**DEFAULT_BATCH_LIMITS, **limits}
        for endpoint, limit in merged.items():
            if limit < 1:
                raise ValueError(f"batch limit of {endpoint.value} must be at least 1")
        if window_ms < 0:
            raise ValueError("window_ms must not be negative")
        if completed_memory < 0:
            raise ValueError("completed_memory must not be negative")
        self._limits: dict[Endpoint, int] = merged
        self._window_s = window_ms / 1000
        self._new_id = id_factory or (lambda: uuid.uuid4().hex)
        self._entries: dict[str, _Entry] = {}
        self._lanes: dict[LaneKey, deque[_Entry]] = {}
        self._buckets: dict[BatchKey, list[_Entry]] = {}
        self._completed: RecentMap[str, None] = RecentMap(completed_memory)
        self._seq = 0
        self._in_flight = 0
        self._duplicates = 0
        # next_deadline() is asked after every wake-up; recompute only after a bucket changed.
        self._deadline: float | None = None
        self._deadline_stale = False

    # -- counters ---------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Commands held: bucketed, waiting in a lane, or in flight."""
        return len(self._entries)

    @property
    def in_flight_count(self) -> int:
        """Commands handed out in batches and not yet completed or requeued."""
        return self._in_flight

    @property
    def bucketed_count(self) -> int:
        """Commands in buckets, waiting to be sent."""
        return sum(len(bucket) for bucket in self._buckets.values())

    @property
    def duplicates(self) -> int:
        """Commands refused by `add` because their command_id was pending or recently done."""
        return self._duplicates

    @property
    def window_ms(self) -> int:
        """The batching window."""
        return round(self._window_s * 1000)

    def limit(self, endpoint: Endpoint) -> int:
        """The most commands one call to `endpoint` carries."""
        return self._limits[endpoint]

    def count_pending(self, where: CommandFilter) -> int:
        """How many held commands satisfy `where` (e.g. belong to some partitions)."""
        return sum(1 for entry in self._entries.values() if where(entry.command))

    # -- intake -----------------------------------------------------------------------------

    def add(self, command: Command, now: float) -> bool:
        """Take a command; False if its command_id is pending or was completed recently.

        A refused command needs no outcome of its own: the earlier copy's outcome covers it, so
        the caller should count it as done for its event (offset watermark) at once.
        """
        command_id = command.command_id
        if command_id in self._entries or command_id in self._completed:
            self._duplicates += 1
            return False
        self._seq += 1
        entry = _Entry(
            command=command,
            enqueued_at=now,
            seq=self._seq,
            state=_State.WAITING,
            lane=command.lane_key,
            key=command.batch_key,
        )
        self._entries[command_id] = entry
        lane = self._lanes.get(entry.lane)
        if lane is None:
            self._lanes[entry.lane] = deque((entry,))
            self._bucket(entry)
        else:
            lane.append(entry)
        return True

    # -- release ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `ready` will next release a batch (maybe already past); None if nothing is due.

        A full bucket is due at once: its deadline is its oldest enqueue time.
        """
        if self._deadline_stale:
            deadline: float | None = None
            for key, bucket in self._buckets.items():
                oldest = bucket[0].enqueued_at
                due = (
                    oldest if len(bucket) >= self._limits[key.endpoint] else oldest + self._window_s
                )
                if deadline is None or due < deadline:
                    deadline = due
            self._deadline = deadline
            self._deadline_stale = False
        return self._deadline

    def ready(self, now: float, max_batches: int | None = None) -> list[Batch]:
        """Pop due batches (full buckets, and buckets whose oldest waited the window).

        At most `max_batches` of them, the oldest first: when calls are scarce, a lane's next
        command (which keeps its enqueue time) goes before commands that arrived after it.
        The commands of the returned batches are in flight until `complete` or `requeue`.
        """
        deadline = self.next_deadline()
        if deadline is None or now < deadline or max_batches == 0:
            return []
        due: list[tuple[tuple[float, int], BatchKey, int, str]] = []
        for key, bucket in self._buckets.items():
            limit = self._limits[key.endpoint]
            full = len(bucket) // limit
            due.extend((_order(bucket[i * limit]), key, limit, "size") for i in range(full))
            rest = bucket[full * limit :]
            if rest and now >= rest[0].enqueued_at + self._window_s:
                due.append((_order(rest[0]), key, len(rest), "window"))
        due.sort(key=lambda item: item[0])
        taken = [
            self._take(key, self._buckets[key][:count], reason, prefix=True)
            for _, key, count, reason in due[:max_batches]
        ]
        return [batch for _, batch in taken]

    def flush_all(self, now: float, where: CommandFilter | None = None) -> list[Batch]:
        """Pop every bucketed command (or those satisfying `where`) in batches, due or not.

        For shutdown and rebalance. Commands waiting behind an in-flight head stay in their
        lane: they become flushable when the head completes, so callers repeat until their
        commands are done. A batch's reason is "size" when full, "window" when its oldest
        command had waited the window anyway, else "flush".
        """
        taken: list[tuple[tuple[float, int], Batch]] = []
        for key in list(self._buckets):
            bucket = self._buckets[key]
            selected = list(bucket) if where is None else [e for e in bucket if where(e.command)]
            limit = self._limits[key.endpoint]
            for start in range(0, len(selected), limit):
                chunk = selected[start : start + limit]
                if len(chunk) == limit:
                    reason = "size"
                elif now >= chunk[0].enqueued_at + self._window_s:
                    reason = "window"
                else:
                    reason = "flush"
                taken.append(self._take(key, chunk, reason, prefix=where is None))
        return _oldest_first(taken)

    # -- results ----------------------------------------------------------------------------

    def complete(self, done: Batch | Iterable[Command]) -> None:
        """Mark in-flight commands done; each lane's next command becomes eligible.

        Raises ValueError, changing nothing, if a command is not in flight.
        """
        for entry in self._in_flight_entries(done):
            lane = self._lanes[entry.lane]
            # An in-flight command is always its lane's head.
            lane.popleft()
            del self._entries[entry.command.command_id]
            self._in_flight -= 1
            self._completed.set(entry.command.command_id, None)
            if lane:
                self._bucket(lane[0])
            else:
                del self._lanes[entry.lane]

    def requeue(self, batch: Batch | Iterable[Command]) -> None:
        """Put in-flight commands back into their buckets (API unavailable), as lane heads.

        They keep their enqueue time, so they go out first and are due at once: the caller
        decides when to call `ready` again. Raises ValueError, changing nothing, if a command
        is not in flight.
        """
        for entry in self._in_flight_entries(batch):
            self._in_flight -= 1
            self._bucket(entry)

    def remember_completed(self, command_ids: Iterable[str]) -> None:
        """Commands completed elsewhere (an earlier process): `add` refuses them from now on."""
        for command_id in command_ids:
            if command_id not in self._entries:
                self._completed.set(command_id, None)

    def discard(self, where: CommandFilter) -> list[Command]:
        """Drop held commands that satisfy `where` and are not in flight (lost partitions).

        In-flight commands stay until completed: their call may already have happened. Dropped
        commands are not remembered as done, so a redelivery is accepted again.
        """
        dropped: list[Command] = []
        for lane_key in list(self._lanes):
            lane = self._lanes[lane_key]
            kept: deque[_Entry] = deque()
            for entry in lane:
                if entry.state is _State.IN_FLIGHT or not where(entry.command):
                    kept.append(entry)
                    continue
                dropped.append(entry.command)
                del self._entries[entry.command.command_id]
                if entry.state is _State.BUCKETED:
                    self._unbucket(entry)
            if len(kept) == len(lane):
                continue
            if not kept:
                del self._lanes[lane_key]
                continue
            self._lanes[lane_key] = kept
            if kept[0].state is _State.WAITING:
                self._bucket(kept[0])
        return dropped

    # -- internals --------------------------------------------------------------------------

    def _bucket(self, entry: _Entry) -> None:
        entry.state = _State.BUCKETED
        bucket = self._buckets.get(entry.key)
        if bucket is None:
            self._buckets[entry.key] = [entry]
        elif _order(bucket[-1]) <= _order(entry):
            bucket.append(entry)
        else:
            bisect.insort(bucket, entry, key=_order)
        self._deadline_stale = True

    def _unbucket(self, entry: _Entry) -> None:
        bucket = self._buckets[entry.key]
        bucket.remove(entry)
        if not bucket:
            del self._buckets[entry.key]
        self._deadline_stale = True

    def _take(
        self, key: BatchKey, entries: list[_Entry], reason: str, *, prefix: bool = False
    ) -> tuple[tuple[float, int], Batch]:
        """Move entries from their bucket into flight; returns (sort order, batch)."""
        bucket = self._buckets[key]
        if prefix:
            del bucket[: len(entries)]
        else:
            taken = {id(entry) for entry in entries}
            bucket[:] = [entry for entry in bucket if id(entry) not in taken]
        if not bucket:
            del self._buckets[key]
        for entry in entries:
            entry.state = _State.IN_FLIGHT
        self._in_flight += len(entries)
        self._deadline_stale = True
        commands = tuple(entry.command for entry in entries)
        batch = Batch(batch_id=self._new_id(), key=key, commands=commands, reason=reason)
        return _order(entries[0]), batch

    def _in_flight_entries(self, items: Batch | Iterable[Command]) -> list[_Entry]:
        commands = items.commands if isinstance(items, Batch) else items
        entries: list[_Entry] = []
        seen: set[str] = set()
        for command in commands:
            entry = self._entries.get(command.command_id)
            if entry is None or entry.state is not _State.IN_FLIGHT or command.command_id in seen:
                raise ValueError(f"command {command.command_id} is not in flight")
            seen.add(command.command_id)
            entries.append(entry)
        return entries


def _oldest_first(taken: list[tuple[tuple[float, int], Batch]]) -> list[Batch]:
    taken.sort(key=lambda item: item[0])
    return [batch for _, batch in taken]
