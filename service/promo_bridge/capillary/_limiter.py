"""The client-side call budget: at most N calls per window per endpoint, spread in time.

Two rules hold together:

1. Spacing (GCRA): one call per `window / N`, with `burst` calls allowed back to back, so a
   backlog leaves as a steady stream instead of N calls at the start of each minute.
2. A sliding log: at most N calls in any window, where a call occupies the window from the
   moment it is taken until `window` after its *response* arrived. The server saw the request
   at some point before the response, so counting from the response is an upper bound: no
   network delay, retry of connection set-up or clock jitter can make the server count more
   than N calls in any of its windows (fixed or sliding), and a call still in flight keeps its
   place until it ends.

Acquirers are served one at a time in arrival order (an asyncio.Lock is FIFO), so waits are
fair and the waiting one holds the lock while it sleeps.

`resize(calls)` changes N while calls go on (a replica's share of the org's budget follows its
partitions). Zero is allowed and takes nothing until the next resize. What holds across one:

- The log keeps every call taken, under whichever N: after a shrink, no call is taken until
  fewer than the new N count in the window, so a replica cannot go on at the old rate.
- The spacing owed at the resize (how many intervals the next call must still wait) is kept
  in calls and converted to the new interval: a shrink cannot leave one last call at the old,
  shorter spacing.
- With burst 1, a replica's calls in any window are bounded by the integral of its rate over
  the window (plus the one call that may start it). So when the replicas' N sum to at most the
  org's budget at every instant, the org's window holds at most that budget plus one call per
  replica at the edges. With burst > 1, each replica whose N just grew may add up to burst - 1
  calls at once on top of that: keep burst 1 where the budget is shared.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Final

_SHORT_WAIT_FRACTION: Final = 0.01
# The shortest the slot log grows before calls that no longer count are pruned from it.
_PRUNE_MIN: Final = 64


class BudgetSlot:
    """One taken call; release it when the response (or the failure) arrives."""

    __slots__ = ("_budget", "end", "start")

    def __init__(self, budget: CallBudget, start: float) -> None:
        self._budget = budget
        self.start = start
        self.end: float | None = None

    def release(self) -> None:
        """The call has ended (response received or transport failure)."""
        if self.end is None:
            self._budget._release(self)

    def cancel(self) -> None:
        """No request was made: give the place in the window back."""
        if self.end is None:
            self._budget._cancel(self)


class CallBudget:
    """A calls-per-window budget for one endpoint."""

    def __init__(
        self,
        calls: int,
        window_s: float,
        *,
        burst: int = 1,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_wait: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        if calls < 1 or window_s <= 0 or burst < 1:
            raise ValueError("calls and burst must be positive and the window longer than zero")
        self._calls = calls
        self._window = window_s
        self._burst = burst
        self._interval = window_s / calls
        self._tolerance = (min(burst, calls) - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        # Theoretical arrival time of the next call that conforms to the spacing.
        self._tat = -math.inf
        self._paused_until = -math.inf
        self._log: list[BudgetSlot] = []
        # The log is pruned when it reaches this length (or the budget): pruning on every
        # acquire walked the whole window's calls each time.
        self._prune_at = _PRUNE_MIN
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._resized = asyncio.Event()

    @property
    def interval_s(self) -> float:
        """The spacing between calls once the burst is used."""
        return self._interval

    @property
    def calls(self) -> int:
        """The most calls allowed in one window (0: none until resized)."""
        return self._calls

    def resize(self, calls: int) -> None:
        """Allow `calls` per window from now on; 0 takes no call until the next resize.

        Calls already taken keep counting in the window, and a waiting acquirer re-reads the
        budget at once (see the module docstring for what holds across the change).
        """
        if calls < 0:
            raise ValueError("calls must not be negative")
        if calls == self._calls:
            return
        if calls > 0:
            interval = self._window / calls
            now = self._clock()
            # While N was 0 the last interval stays in `_interval`: the spacing owed since
            # the last call taken converts from it.
            if self._tat > now:
                self._tat = now + (self._tat - now) / self._interval * interval
            self._interval = interval
            self._tolerance = (min(self._burst, calls) - 1) * interval
        self._calls = calls
        self._resized.set()
        self._released.set()

    def used(self) -> int:
        """Calls taken that still count in the window now (in flight or recently answered)."""
        now, window = self._clock(), self._window
        return sum(1 for s in self._log if s.end is None or s.end + window > now)

    def defer(self, until: float) -> None:
        """Take no call before `until` (the API asked to wait: a 429 or 503 Retry-After)."""
        self._paused_until = max(self._paused_until, until)

    async def acquire(self) -> BudgetSlot:
        """Wait for a place in the budget and take it."""
        waited = 0.0
        due = -math.inf
        async with self._lock:
            while True:
                now = self._clock()
                ready_at = self._ready_at(now)
                if ready_at <= now:
                    break
                if math.isinf(ready_at):
                    # N calls in flight and none ended, or N is 0: only a release or a resize
                    # can make room.
                    due = -math.inf
                    self._released.clear()
                    await self._released.wait()
                else:
                    due = ready_at
                    await self._sleep_or_resize(ready_at - now)
                waited += self._clock() - now
            # A caller that slept until it was due and woke late (the event loop's lag) spaces
            # the next call from when it was due: otherwise every wake-up's lag is lost, and a
            # saturated budget yields a few percent less than N per window.
            self._tat = max(self._tat, min(now, due) if due > -math.inf else now) + self._interval
            slot = BudgetSlot(self, now)
            self._log.append(slot)
        if waited > 0:
            self._on_wait(waited)
        return slot

    async def _sleep_or_resize(self, seconds: float) -> None:
        # A wait computed under a small N would outlast a grown budget by up to a window. A
        # short one is slept out: it delays a growth by under 1 % of the window, and racing it
        # would cost two tasks per call at high rates.
        if seconds < self._window * _SHORT_WAIT_FRACTION:
            await self._sleep(seconds)
            return
        self._resized.clear()
        resized = asyncio.ensure_future(self._resized.wait())
        slept = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({resized, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (resized, slept):
                task.cancel()
            # A cancelled acquirer must not leave the sleep running; its result is irrelevant.
            await asyncio.gather(resized, slept, return_exceptions=True)

    def _ready_at(self, now: float) -> float:
        window = self._window
        # Below the budget, calls that no longer count can wait: only the count at the budget
        # decides anything, and stale entries only ever make it larger.
        if len(self._log) >= min(self._calls, self._prune_at):
            self._log = [s for s in self._log if s.end is None or s.end + window > now]
            self._prune_at = 2 * len(self._log) + _PRUNE_MIN
        if self._calls == 0:
            return math.inf
        ready_at = max(self._tat - self._tolerance, self._paused_until)
        if len(self._log) >= self._calls:
            ends = [s.end for s in self._log if s.end is not None]
            # The earliest place to free up is the one whose response came first.
            ready_at = max(ready_at, min(ends) + window) if ends else math.inf
        return ready_at

    def _release(self, slot: BudgetSlot) -> None:
        slot.end = self._clock()
        self._released.set()

    def _cancel(self, slot: BudgetSlot) -> None:
        slot.end = -math.inf
        if slot in self._log:
            self._log.remove(slot)
        self._released.set()
