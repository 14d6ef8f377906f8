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
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable


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
        self._interval = window_s / calls
        self._tolerance = (min(burst, calls) - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        # Theoretical arrival time of the next call that conforms to the spacing.
        self._tat = -math.inf
        self._paused_until = -math.inf
        self._log: list[BudgetSlot] = []
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    @property
    def interval_s(self) -> float:
        """The spacing between calls once the burst is used."""
        return self._interval

    @property
    def calls(self) -> int:
        """The most calls allowed in one window."""
        return self._calls

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
        async with self._lock:
            while True:
                now = self._clock()
                ready_at = self._ready_at(now)
                if ready_at <= now:
                    break
                if math.isinf(ready_at):
                    # N calls in flight and none ended: only a release can make room.
                    self._released.clear()
                    await self._released.wait()
                else:
                    await self._sleep(ready_at - now)
                waited += self._clock() - now
            self._tat = max(self._tat, now) + self._interval
            slot = BudgetSlot(self, now)
            self._log.append(slot)
        if waited > 0:
            self._on_wait(waited)
        return slot

    def _ready_at(self, now: float) -> float:
        window = self._window
        self._log = [s for s in self._log if s.end is None or s.end + window > now]
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
